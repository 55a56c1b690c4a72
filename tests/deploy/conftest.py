"""The deploy/ checks run the real tools from PyPI wheels (the `dev` extra), all offline: hadolint, kubectl
(kustomize), kubernetes-validate, envoy."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OVERLAYS = ("cpu-tiny", "gpu")


def tool(name: str) -> str:
    """A tool from this environment's bin folder (where the wheels put them), else from PATH."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found: `pip install -e '.[dev]'` installs it")
    return found


def run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=ROOT, check=False, **kwargs)


def render(overlay: str) -> list[dict]:
    if overlay == "cpu-tiny":  # its Secret values are made locally (`make k8s-secrets`), never committed
        made = run([sys.executable, str(DEPLOY / "k8s" / "overlays" / "cpu-tiny" / "make_secrets.py")])
        assert made.returncode == 0, made.stderr
    result = run([tool("kubectl"), "kustomize", str(DEPLOY / "k8s" / "overlays" / overlay)])
    assert result.returncode == 0, result.stderr
    return [document for document in yaml.safe_load_all(result.stdout) if document]


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict]]:
    """Every overlay, rendered once: {overlay: [objects]}."""
    return {overlay: render(overlay) for overlay in OVERLAYS}
