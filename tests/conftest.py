"""Shared fixtures: the tiny models (built once per session) and, for end-to-end tests, every service as a process."""

from __future__ import annotations

import os
from pathlib import Path

# One torch/OpenMP thread per process, set before torch is imported (here and, inherited, in every service process
# the tests start). The tiny models are all per-op overhead, and the end-to-end tests run three or four model
# processes at once: on this 2-core machine their OpenMP pools would spin at barriers waiting for each other.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# A stack torn down while jobs still run (a bounded-queue probe, queue blockers) would wait out the production drain
# (10 s) in the composer and in each backend with a stream in flight; the tests of the drain set their own.
os.environ.setdefault("TUNEREEL_DRAIN_SECONDS", "2")

import pytest  # noqa: E402

from tunereel.tiny import ensure_tiny_models  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="session")
def models_dir() -> Path:
    directory = Path(os.environ.get("TUNEREEL_MODELS_DIR", ROOT / ".cache" / "tunereel" / "models")).resolve()
    ensure_tiny_models(directory)
    return directory


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def postgres_url():
    """A fresh database on the machine's PostgreSQL, dropped afterwards. CI must have it; elsewhere it may skip."""
    import uuid

    import sqlalchemy as sa

    admin_url = os.environ.get("TUNEREEL_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    name = f"tunereel_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sa.exc.OperationalError as error:
        admin.dispose()
        if os.environ.get("CI"):
            raise
        pytest.skip(f"PostgreSQL not reachable at {admin_url}: {error.orig}")
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
