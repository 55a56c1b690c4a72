"""deploy/docker: every Dockerfile passes hadolint, and the images are what the design asks for (CUDA for the model
services, slim CPU for the rest, pinned versions, non-root, health checks, no weights). There is no Docker engine
here: the images are linted and checked, not built; the package they install is built as a wheel and inspected."""

from __future__ import annotations

import re
import shutil
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.conftest import DEPLOY, ROOT, run, tool

DOCKERFILES = sorted(path for path in DEPLOY.rglob("*Dockerfile*") if not path.name.endswith(".dockerignore"))
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def stages(path: Path) -> dict[str, dict]:
    """{stage name: {"from": image or stage, "lines": [instruction lines]}}, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", text, re.MULTILINE))
    found: dict[str, dict] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if match := re.match(r"FROM (\S+) AS (\S+)", line, re.IGNORECASE):
            image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], match.group(1))
            current = found.setdefault(match.group(2), {"from": image, "lines": []})
        elif current is not None and line and not line.startswith("#"):
            current["lines"].append(line)
    return found


def inherited(all_stages: dict[str, dict], name: str) -> tuple[str, list[str]]:
    """A stage's base image (following stage names) and every instruction it has, its parents' first."""
    stage = all_stages[name]
    if stage["from"] in all_stages:
        image, lines = inherited(all_stages, stage["from"])
        return image, [*lines, *stage["lines"]]
    return stage["from"], stage["lines"]


def source_copies(all_stages: dict[str, dict], name: str) -> list[tuple[str, str]]:
    """(path in the build context, destination) of everything a stage copies from the context into its sources, taken
    also through a stage it copies its /src from (`COPY --from=sources /src/ ./`); absolute destinations (/tmp) are
    not sources. The generated protos (`--from=protos`, a subfolder) are not from the context."""
    copies = []
    for line in inherited(all_stages, name)[1]:
        if (match := re.match(r"COPY --from=(\S+) /src/ \S+$", line)) and match.group(1) in all_stages:
            copies += source_copies(all_stages, match.group(1))
        elif (match := re.match(r"COPY (?!--from)(.+) (\S+)$", line)) and not match.group(2).startswith("/"):
            copies += [(item, match.group(2)) for item in match.group(1).split()]
    return copies


def test_there_are_dockerfiles_and_hadolint_passes_them_all():
    assert DOCKERFILE in DOCKERFILES
    for path in DOCKERFILES:
        result = run([tool("hadolint"), "--no-color", str(path)])
        assert result.returncode == 0, f"{path}:\n{result.stdout}{result.stderr}"


def test_hadolint_is_real(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install flask\n")
    result = run([tool("hadolint"), "--no-color", str(bad)])
    assert result.returncode != 0 and "DL3007" in result.stdout and "DL3013" in result.stdout


@pytest.mark.parametrize(
    ("target", "base", "port"),
    [
        ("music", "nvidia/cuda:", 50051),
        ("video", "nvidia/cuda:", 50052),
        ("composer", "python:", 50050),
        ("gateway", "python:", 8000),
    ],
)
def test_each_service_image(target, base, port):
    all_stages = stages(DOCKERFILE)
    image, lines = inherited(all_stages, target)
    assert image.startswith(base), image
    tag = image.rpartition(":")[2]
    assert tag and tag != "latest" and re.search(r"\d+\.\d+", tag), f"{image}: pin the base image's version"
    if base == "nvidia/cuda:":
        assert "runtime" in tag
        torch = [line for line in lines if "torch==" in line]
        assert torch and not any("whl/cpu" in line for line in torch), "music and video need the CUDA build of torch"
    else:
        assert "slim" in tag
        assert any("torch==" in line and "download.pytorch.org/whl/cpu" in line for line in lines), "CPU torch only"
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0"), "runs as a non-root user"
    assert int(users[-1]) >= 1000
    healthchecks = [line for line in lines if line.startswith("HEALTHCHECK ")]
    assert healthchecks and "tunereel.healthcheck" in healthchecks[-1] and str(port) in healthchecks[-1]
    assert f"EXPOSE {port}" in lines
    assert any(line.startswith("ENTRYPOINT") for line in all_stages[target]["lines"])


def test_images_hold_no_weights_and_forbid_downloads():
    text = DOCKERFILE.read_text()
    for forbidden in ("hf download", "huggingface-cli", "from_pretrained", "tunereel.tiny", ".cache"):
        assert forbidden not in text
    _, lines = inherited(stages(DOCKERFILE), "music")
    assert any("HF_HUB_OFFLINE=1" in line for line in lines)
    lines = (DEPLOY / "docker" / "Dockerfile.dockerignore").read_text().splitlines()
    ignore = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*", "the build context is an allow-list: everything out, then named paths back in"
    assert "!.venv" not in ignore and "!.cache" not in ignore


def test_python_dependencies_are_pinned_within_the_projects_ranges():
    pins = {}
    for line in (DEPLOY / "docker" / "requirements.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            requirement = Requirement(line)
            (specifier,) = requirement.specifier
            assert specifier.operator == "==", line
            pins[canonicalize_name(requirement.name)] = specifier.version
    assert "torch" not in pins  # each image installs its own build
    for line in PYPROJECT["project"]["dependencies"]:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        if name == "torch":
            torch = re.search(r"ARG TORCH_VERSION=(\S+)", DOCKERFILE.read_text()).group(1)
            assert requirement.specifier.contains(torch)
            continue
        assert name in pins, f"{requirement.name} is not pinned: run `make docker-requirements`"
        assert requirement.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} breaks {line}"


def test_the_images_copy_every_package_folder():
    copied = set(re.findall(r"^COPY (\S+)/ \S+/$", DOCKERFILE.read_text(), re.MULTILINE))
    folders = {path.split("/")[0] for path in PYPROJECT["tool"]["setuptools"]["package-dir"].values()}
    assert folders <= copied, folders - copied


@pytest.mark.parametrize("target", ["composer", "music"])  # the CPU and the GPU runtime each install the sources
def test_the_installed_package_carries_its_data(tmp_path, target):
    """What `pip install --no-deps /src` puts into an image, built from exactly what the Dockerfile copies: code,
    generated protos, migrations, UI, service config."""
    source = tmp_path / "src"
    source.mkdir()
    copies = source_copies(stages(DOCKERFILE), target)
    # exactly what the build context lets in (Dockerfile.dockerignore), less the protos stage's input and what is
    # installed before the sources
    lines = (DEPLOY / "docker" / "Dockerfile.dockerignore").read_text().splitlines()
    allowed = {line[1:] for line in lines if line.startswith("!")} - {"protos/", "deploy/docker/requirements.txt"}
    assert sorted(item for item, _ in copies) == sorted(allowed)
    for item, destination in copies:
        origin = ROOT / item.rstrip("/")
        copy = source / (item.rstrip("/") if destination != "./" else origin.name)
        if origin.is_dir():
            shutil.copytree(origin, copy, ignore=shutil.ignore_patterns("__pycache__", "v1"))
        else:
            shutil.copy(origin, copy)
    shutil.copytree(ROOT / "tunereel" / "v1", source / "tunereel" / "v1")  # the protos stage's output
    result = run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(source),
        ]
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("tunereel-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "tunereel/healthcheck.py",
        "tunereel/service_config.json",
        "tunereel/v1/music_pb2_grpc.py",
        "tunereel/music/server.py",
        "tunereel/video/server.py",
        "tunereel/composer/server.py",
        "tunereel/composer/migrations/env.py",
        "tunereel/gateway/static/index.html",
    ):
        assert needed in names, needed
    assert any(name.startswith("tunereel/composer/migrations/versions/") for name in names)
