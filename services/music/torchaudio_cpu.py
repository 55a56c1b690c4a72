"""Make PyPI's torchaudio importable next to a CPU-only torch, for the melody presets' processor.

PyPI's torchaudio wheel is a CUDA build: with a CPU-only torch its compiled extension cannot load (`libc10_cuda.so`
is missing) and `import torchaudio` raises. What the melody processor uses (`transforms.Spectrogram`,
`functional.resample`) is plain torch, and torchaudio skips its extension when the library files are absent. So, on a
CPU-only torch only, this removes `torchaudio/lib/*.so` from the installed package — a patch to an installed library,
named here and run by `make install`; the CUDA images keep torchaudio as installed. Idempotent.

    python -m tunereel.music.torchaudio_cpu
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path


def _imports() -> tuple[bool, str]:
    result = subprocess.run([sys.executable, "-c", "import torchaudio"], capture_output=True, text=True, check=False)
    return result.returncode == 0, (result.stderr.strip().splitlines() or [""])[-1]


def main() -> int:
    spec = importlib.util.find_spec("torchaudio")
    if spec is None or spec.origin is None:
        print("torchaudio is not installed: the melody presets will report NOT_SERVING (pip install -e '.[melody]')")
        return 0
    import torch

    ok, error = _imports()
    if ok:
        print("torchaudio imports: left as installed")
        return 0
    if torch.version.cuda is not None:
        print(f"torchaudio does not import next to a CUDA torch ({error}); not touched", file=sys.stderr)
        return 1
    libraries = sorted((Path(spec.origin).parent / "lib").glob("*.so"))
    for library in libraries:
        library.unlink()
    ok, error = _imports()
    if not ok:
        print(f"torchaudio still does not import ({error})", file=sys.stderr)
        return 1
    print(f"torchaudio: removed its CUDA extension ({', '.join(p.name for p in libraries)}); pure-torch mode on this CPU torch")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
