"""Write this overlay's Secret values (random, never committed): api-keys.env, service-key.env, postgres.env,
database.env.

`make k8s-secrets` runs it; an existing file is kept, so the values stay stable across renders.
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    password = secrets.token_urlsafe(24)
    files = {
        "api-keys.env": f"keys={secrets.token_urlsafe(24)}\n",
        "postgres.env": f"user=tunereel\npassword={password}\ndatabase=tunereel\n",
        "database.env": f"url=postgresql+psycopg://tunereel:{password}@postgres:5432/tunereel\n",
    }
    # The composer's key for music and video, apart from the tenants' keys; made on its own when missing.
    if not (HERE / "service-key.env").exists():
        write(HERE / "service-key.env", f"key={secrets.token_urlsafe(24)}\n")
    if all((HERE / name).exists() for name in files):
        return 0
    for name, text in files.items():  # all three together: the database URL carries postgres.env's password
        write(HERE / name, text)
    return 0


def write(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o600)
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
