"""Rules of the codebase that a reviewer would otherwise have to remember (`make lint` runs this file and ruff):

- no module imports a private name (`_x`) from another module of the project, and none reaches into another
  module's private names through a module it imported (`store_module._engine`);
- the service config covers every gRPC service the project defines.

The walk covers every Python file under the project's own folders, so code added later is checked too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("services", "gateway", "tunereel", "tests", "bench", "deploy")
GENERATED = ROOT / "tunereel" / "v1"
# Import roots that are this project (the installed package and the source folders it maps).
PROJECT_ROOTS = ("tunereel", "services", "gateway", "tests", "bench")


def project_files() -> list[Path]:
    files = []
    for folder in FOLDERS:
        for path in (ROOT / folder).rglob("*.py"):
            if GENERATED in path.parents or ".venv" in path.parts:
                continue
            files.append(path)
    return sorted(files)


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def is_project_module(node: ast.ImportFrom) -> bool:
    return node.level > 0 or (node.module or "").split(".")[0] in PROJECT_ROOTS


def private_imports(path: Path) -> list[str]:
    """`from project.module import _name`, and `alias._name` where alias is a project module imported here."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    module_aliases: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and is_project_module(node):
            for alias in node.names:
                if is_private(alias.name):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: imports {alias.name} from {node.module or '.'}")
                elif alias.asname or alias.name.islower():
                    module_aliases.add(alias.asname or alias.name)  # may be a module (from pkg import module)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PROJECT_ROOTS:
                    module_aliases.add(alias.asname or alias.name.split(".")[0])
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and is_private(node.attr) and isinstance(node.value, ast.Name)
                and node.value.id in module_aliases):  # fmt: skip
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: uses {node.value.id}.{node.attr}")
    return found


def test_no_module_imports_a_private_name_of_another():
    problems = [problem for path in project_files() for problem in private_imports(path)]
    assert not problems, "private names used across modules:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from tunereel.composer.loudness import _Limiter\n", 1),
        ("from .loudness import _peak_envelope, master\n", 1),
        ("import tunereel.composer.store as store_module\nstore_module._engine('x')\n", 1),
        ("from tunereel.composer import compose\ncompose._LeadGate\n", 1),
        ("from numpy import _private_thing\nimport os\nos._exit(0)\n", 0),  # not this project's
        ("from tunereel.composer.audio import master\nclass A:\n    def f(self):\n        return self._x\n", 0),
    ],
)
def test_the_rule_catches_what_it_should(tmp_path, source, expected):
    probe = ROOT / "tests" / "unit" / "_probe_private_imports.py"
    probe.write_text(source)
    try:
        assert len(private_imports(probe)) == expected
    finally:
        probe.unlink()


def test_service_config_names_every_grpc_service():
    from tunereel import v1
    from tunereel.channels import SERVICE_CONFIG

    configured = {entry["service"] for method in SERVICE_CONFIG["methodConfig"] for entry in method["name"]}
    defined = set()
    for path in Path(v1.__file__).parent.glob("*_pb2.py"):
        module = __import__(f"tunereel.v1.{path.stem}", fromlist=["DESCRIPTOR"])
        defined |= {service.full_name for service in module.DESCRIPTOR.services_by_name.values()}
    assert defined, "no generated services found (run `make protos`)"
    assert defined <= configured, f"services without a retry/round-robin policy: {sorted(defined - configured)}"


def test_the_ui_compares_only_names_the_enums_define():
    """The UI's state and stage literals are the proto enums' names (GET /v1/enums serves them)."""
    import re

    from tunereel.wire import enum_names

    names = enum_names()
    source = (ROOT / "gateway" / "static" / "app.js").read_text()
    states = set(re.findall(r'state [!=]==? "(\w+)"', source))
    stages = set(re.findall(r'stage [!=]==? "(\w+)"', source))
    assert states and states <= set(names["job_states"]), states - set(names["job_states"])
    assert stages and stages <= set(names["stages"]), stages - set(names["stages"])


def test_the_ui_offers_and_compares_only_the_request_models_cuts():
    """The UI's cuts values (the select's options, the literals app.js compares `cuts` with) are the request model's,
    so a renamed or new value cannot drift between the page and the API."""
    import re
    from typing import get_args

    from tunereel.request import GenerationRequest

    allowed = set(get_args(GenerationRequest.model_fields["cuts"].annotation))
    page = (ROOT / "gateway" / "static" / "index.html").read_text()
    select = re.search(r'<select id="cuts".*?</select>', page, re.S)
    assert select, "no cuts select in the page"
    options = set(re.findall(r'<option value="(\w*)"', select[0]))
    assert options - {""} == allowed - {"auto"}  # "" is the select's default option: the server's default, auto
    source = (ROOT / "gateway" / "static" / "app.js").read_text()
    compared = set(re.findall(r'cuts(?:\.value)? [!=]==? "(\w+)"', source))
    assert compared and compared <= allowed, compared - allowed
