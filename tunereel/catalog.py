"""The preset table, read as a whole: where each preset's weights load from, whether they are here and complete, and
the `hf download` command that fetches what is missing.

Everything that names hub repositories or download commands outside tunereel/presets.py is generated from here, so
there is no second copy of a hub id to drift: the `tunereel models` listing, the missing-weights error message
(tunereel/loading.py), the README's model section and the gpu overlay's `load-weights` Job (both rewritten by
`python -m tunereel.catalog --write`, and checked equal by tests/unit/test_catalog.py and tests/deploy/test_k8s.py).

Presets are read through their shared fields only (`source`, `revision`, `allow_patterns`, `single_file`, `license`,
`docs`), with getattr defaults, so music and video presets are listed alike.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import asdict, dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from tunereel.presets import MUSIC_PRESETS, VIDEO_PRESETS, default_models_dir

__all__ = [
    "GPU_PRESETS",
    "WeightsStatus",
    "all_presets",
    "download_command",
    "download_commands",
    "repositories",
    "hub_cache_dir",
    "missing_weights_message",
    "readme_section",
    "job_script",
    "preset_of",
    "status",
    "main",
]

# The presets the GPU deployment runs (Dockerfile CMD, overlays/gpu music.yaml and video.yaml, the load-weights Job);
# tests/deploy checks that each of those names exactly these.
GPU_PRESETS = {"music": "small", "video": "ltx-2b-distilled"}

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
JOB = ROOT / "deploy" / "k8s" / "overlays" / "gpu" / "load-weights.yaml"
README_BEGIN, README_END = "<!-- tunereel:models begin -->", "<!-- tunereel:models end -->"
JOB_BEGIN, JOB_END = "# tunereel:weights begin", "# tunereel:weights end"
TINY_MARKER = ".tiny-complete"  # written last by tunereel.tiny into a finished build


def all_presets() -> list[tuple[str, Any]]:
    """(kind, preset) for every music then every video preset, in table order."""
    return [("music", p) for p in MUSIC_PRESETS.values()] + [("video", p) for p in VIDEO_PRESETS.values()]


def _field(preset: Any, name: str, default: Any = None) -> Any:
    return getattr(preset, name, default)


def is_local(preset: Any) -> bool:
    return preset.source.startswith("local:")


def repositories(preset: Any) -> list[tuple[str, str | None, tuple[str, ...]]]:
    """(repository, revision, include patterns) for every hub repository `preset` reads: its own first (with its
    single-file checkpoint), then any it takes configs, text encoder or upsampler from (video presets' `downloads()`)."""
    if is_local(preset):
        raise ValueError(f"preset {preset.name!r} is a local folder, not a hub repository")
    downloads = preset.downloads() if hasattr(preset, "downloads") else [
        (preset.source, _field(preset, "revision"), tuple(_field(preset, "allow_patterns", ()) or ()))
    ]
    (source, revision, patterns), *others = downloads
    single = _field(preset, "single_file")
    if single and not any(fnmatch(single, pattern) for pattern in patterns):
        patterns = (*patterns, single)
    return [(source, revision, tuple(patterns)), *others]


def download_commands(preset: Any) -> list[str]:
    """The `hf download` commands that fetch what `preset` loads (its revisions, only the files it reads), one per
    repository.

    `hf` (huggingface_hub's CLI) takes one pattern per `--include`; patterns after a single `--include` would be
    read as file names and the patterns ignored.
    """
    commands = []
    for source, revision, patterns in repositories(preset):
        parts = ["hf", "download", source]
        if revision:
            parts += ["--revision", revision]
        for pattern in patterns:
            parts += ["--include", pattern]
        commands.append(" ".join(_quote(part) for part in parts))
    return commands


def download_command(preset: Any) -> str:
    """All of `preset`'s `hf download` commands as one shell line."""
    return " && ".join(download_commands(preset))


def _quote(part: str) -> str:
    # double quotes, as people type them (shlex would use single quotes); patterns never contain quotes or $
    return f'"{part}"' if re.search(r"[^\w@%+=:,./-]", part) else part


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache this process reads, as huggingface_hub resolved it at import (HF_HUB_CACHE, else
    HF_HOME/hub, else ~/.cache/huggingface/hub)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE).expanduser()


@dataclass(frozen=True)
class WeightsStatus:
    kind: str
    preset: str
    source: str
    revision: str | None
    location: str  # the folder the service loads from (a hub cache snapshot, or a local folder)
    state: str  # "complete", "incomplete" or "missing"
    problems: tuple[str, ...]
    size_bytes: int
    license: str
    docs: str
    command: str | None  # what fetches the missing part (None when complete)

    @property
    def complete(self) -> bool:
        return self.state == "complete"


def status(kind: str, preset: Any, *, models_dir: Path | None = None, cache_dir: Path | None = None) -> WeightsStatus:
    """Whether `preset`'s weights are on this machine, complete, and how big they are; nothing is downloaded."""
    if is_local(preset):
        folder = (models_dir or default_models_dir()) / preset.source.removeprefix("local:")
        problems = [] if folder.is_dir() else [f"{folder} does not exist"]
        if not problems and folder.name.startswith("tiny-") and not (folder / TINY_MARKER).exists():
            problems.append("the tiny-model build did not finish")
        problems += [] if problems else _snapshot_problems(folder, preset)
        state = "missing" if not folder.is_dir() else ("incomplete" if problems else "complete")
        command = None if state == "complete" else f"python -m tunereel.tiny --models-dir {folder.parent}  (or `make models`)"
        return WeightsStatus(kind, preset.name, preset.source, None, str(folder), state, tuple(problems),
                             _size(folder) if folder.is_dir() else 0, _field(preset, "license", ""),
                             _field(preset, "docs", ""), command)  # fmt: skip
    repo_dir = (cache_dir or hub_cache_dir()) / ("models--" + preset.source.replace("/", "--"))
    revision = _field(preset, "revision")
    ref = revision or _read(repo_dir / "refs" / "main")
    snapshot = repo_dir / "snapshots" / ref if ref else None
    problems: list[str] = []
    if not repo_dir.is_dir():
        state, location = "missing", repo_dir
        problems.append("not in the Hugging Face cache")
    elif snapshot is None or not snapshot.is_dir():
        state, location = "missing", repo_dir
        have = sorted(p.name[:12] for p in (repo_dir / "snapshots").glob("*")) if (repo_dir / "snapshots").is_dir() else []
        problems.append(f"revision {revision or 'main'} not in the cache" + (f" (it has {', '.join(have)})" if have else ""))
    else:
        location = snapshot
        problems += _snapshot_problems(snapshot, preset)
        if any((repo_dir / "blobs").glob("*.incomplete")):
            problems.append("an interrupted download left .incomplete files")
        problems += _other_repository_problems(preset, cache_dir or hub_cache_dir())
        state = "incomplete" if problems else "complete"
    return WeightsStatus(kind, preset.name, preset.source, revision, str(location), state, tuple(problems),
                         _size(snapshot) if snapshot is not None and snapshot.is_dir() else 0,
                         _field(preset, "license", ""), _field(preset, "docs", ""),
                         None if state == "complete" else download_command(preset))  # fmt: skip


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def _snapshot_problems(folder: Path, preset: Any) -> list[str]:
    """What a loader would miss in `folder`: its root config, weights, shards named by an index, diffusers
    components named by model_index.json, the single-file checkpoint; and links to blobs that are gone."""
    problems = []
    files = {p.relative_to(folder).as_posix(): p for p in folder.rglob("*") if not p.is_dir()}
    dangling = sorted(name for name, p in files.items() if p.is_symlink() and not p.exists())
    if dangling:
        problems.append(f"{len(dangling)} file(s) point to missing blobs: {', '.join(dangling[:3])}")
    present = {name for name, p in files.items() if p.exists()}
    single = _field(preset, "single_file")
    if single:
        if single not in present:
            problems.append(f"{single} is missing")
    elif "config.json" not in present and "model_index.json" not in present:
        problems.append("config.json (or model_index.json) is missing")
    if not any(name.endswith((".safetensors", ".bin", ".pt", ".pth")) for name in present):
        problems.append("no weights file")
    problems += _lost_shards(files, present)
    problems += _lost_components(files, present)
    return problems


def _lost_shards(files: dict[str, Path], present: set[str]) -> list[str]:
    """Shards that a weights index names but the folder lacks."""
    problems = []
    for name in sorted(present):
        if not name.endswith((".safetensors.index.json", ".bin.index.json")):
            continue
        try:
            shards = set(json.loads(files[name].read_text())["weight_map"].values())
        except (OSError, ValueError, KeyError):
            problems.append(f"{name} is unreadable")
            continue
        base = name.rpartition("/")[0]
        lost = sorted(s for s in shards if (f"{base}/{s}" if base else s) not in present)
        if lost:
            problems.append(f"{len(lost)} of {len(shards)} shard(s) named by {name} are missing: {', '.join(lost[:3])}")
    return problems


def _lost_components(files: dict[str, Path], present: set[str]) -> list[str]:
    """diffusers components that model_index.json names but the folder lacks."""
    if "model_index.json" not in present:
        return []
    try:
        index = json.loads(files["model_index.json"].read_text())
    except (OSError, ValueError):
        return ["model_index.json is unreadable"]
    return [
        f"component folder {component}/ is missing"
        for component, value in index.items()
        if not component.startswith("_") and isinstance(value, list) and value[0] is not None
        and not any(name.startswith(component + "/") for name in present)
    ]


def _other_repository_problems(preset: Any, cache_dir: Path) -> list[str]:
    """What is missing of the repositories a preset reads besides its own (e.g. the configs and T5 of a single-file
    checkpoint): each must be cached at its revision with a file for every include pattern."""
    problems = []
    for source, revision, patterns in repositories(preset)[1:]:
        repo_dir = cache_dir / ("models--" + source.replace("/", "--"))
        ref = revision or _read(repo_dir / "refs" / "main")
        snapshot = repo_dir / "snapshots" / ref if ref else None
        if snapshot is None or not snapshot.is_dir():
            problems.append(f"{source} (revision {revision or 'main'}) is not in the Hugging Face cache")
            continue
        present = [p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file()]
        lost = [pattern for pattern in patterns if not any(fnmatch(name, pattern) for name in present)]
        if lost:
            problems.append(f"{source}: nothing matches {', '.join(lost[:3])}")
    return problems


def _size(folder: Path) -> int:
    total = 0
    for path in folder.rglob("*"):
        try:
            if path.is_file():
                total += path.stat().st_size  # follows the snapshot's links to the blobs
        except OSError:
            pass
    return total


def missing_weights_message(source: str) -> str:
    """The sentence the services log (and answer FAILED_PRECONDITION with) when a hub repository is not cached."""
    commands = sorted({download_command(p) for _, p in all_presets() if not is_local(p) and p.source == source})
    how = " or ".join(f"`{c}`" for c in commands) if commands else f"`hf download {source}`"
    return (
        f"weights for {source!r} are not in the local Hugging Face cache and tunereel never downloads at run time: "
        f"run {how} once on a machine with network access (or fill HF_HOME on the volume), or pass a local folder "
        f"with the weights, then restart the service; `tunereel models` lists what is missing"
    )


def human_size(size: int) -> str:
    if size <= 0:
        return "-"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return "-"


# ------------------------------------------------------------------------------------------- generated documents
def readme_section() -> str:
    """The README's model table and download commands, from the preset table."""
    lines = [
        README_BEGIN,
        "| kind | preset | weights (revision) | licence | settings from |",
        "|---|---|---|---|---|",
    ]
    for kind, preset in all_presets():
        if is_local(preset):
            where = f"`{preset.source}` (random weights, built offline by `make models`)"
        else:
            single = _field(preset, "single_file")
            rev = _field(preset, "revision")
            where = f"`{preset.source}`" + (f" `{single}`" if single else "") + (f" ({rev[:12]})" if rev else " (main)")
        lines.append(f"| {kind} | `{preset.name}` | {where} | {_field(preset, 'license', '') or '-'} | {_field(preset, 'docs', '') or '-'} |")
    lines += ["", "To fetch a preset's weights into the Hugging Face cache (only the files it loads):", "", "```sh"]
    lines += dict.fromkeys(command for _, p in all_presets() if not is_local(p) for command in download_commands(p))
    lines += ["```", README_END]
    return "\n".join(lines)


def job_script(indent: str = "") -> str:
    """The load-weights Job's download lines for the GPU presets, between their markers."""
    lines = [f"{JOB_BEGIN} (generated by `python -m tunereel.catalog --write`: presets "
             + ", ".join(f"{kind} {name}" for kind, name in GPU_PRESETS.items()) + ")"]  # fmt: skip
    lines += [command for kind, name in GPU_PRESETS.items() for command in download_commands(preset_of(kind, name))]
    lines.append(JOB_END)
    return "\n".join(indent + line for line in lines)


def preset_of(kind: str, name: str) -> Any:
    return (MUSIC_PRESETS if kind == "music" else VIDEO_PRESETS)[name]


def _replace_between(text: str, begin: str, end: str, new: str, *, line_block: bool) -> str:
    if line_block:  # whole lines, keeping the indentation of the begin marker
        pattern = re.compile(rf"^([ \t]*){re.escape(begin)}.*?^[ \t]*{re.escape(end)}[^\n]*$", re.DOTALL | re.MULTILINE)
        match = pattern.search(text)
        if not match:
            raise ValueError(f"markers {begin!r} … {end!r} not found")
        return text[: match.start()] + new(match.group(1)) + text[match.end() :]
    start, stop = text.index(begin), text.index(end) + len(end)
    return text[:start] + new + text[stop:]


def generated_readme(text: str) -> str:
    return _replace_between(text, README_BEGIN, README_END, readme_section(), line_block=False)


def generated_job(text: str) -> str:
    return _replace_between(text, JOB_BEGIN, JOB_END, lambda indent: job_script(indent), line_block=True)


def write_generated() -> list[Path]:
    """Rewrite the generated parts of README.md and the load-weights Job; returns the files that changed."""
    changed = []
    for path, generate in ((README, generated_readme), (JOB, generated_job)):
        old = path.read_text()
        new = generate(old)
        if new != old:
            path.write_text(new)
            changed.append(path)
    return changed


# ------------------------------------------------------------------------------------------------------ the CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("presets", nargs="*", help="preset names (default: every preset); `music:NAME`/`video:NAME` when a name is both")
    parser.add_argument("--kind", choices=("music", "video"), help="only music or only video presets")
    parser.add_argument("--models-dir", type=Path, default=None, help="folder of the local (tiny) models")
    parser.add_argument("--json", action="store_true", help="one JSON object per preset")


def run(args: argparse.Namespace, out=sys.stdout, err=sys.stderr) -> int:
    """`tunereel models`: exit 0 when every listed preset's weights are complete, 1 when some are not, 2 for an
    unknown preset name."""
    chosen = [(k, p) for k, p in all_presets() if args.kind in (None, k)]
    if args.presets:
        picked = []
        for wanted in args.presets:
            kind, _, name = wanted.rpartition(":")
            found = [(k, p) for k, p in chosen if p.name == name and kind in ("", k)]
            if not found:
                known = ", ".join(sorted({p.name for _, p in chosen}))
                print(f"error: unknown preset {wanted!r}; known presets: {known}", file=err)
                return 2
            picked += found
        chosen = picked
    statuses = [status(kind, preset, models_dir=args.models_dir) for kind, preset in chosen]
    if args.json:
        for item in statuses:
            print(json.dumps({**asdict(item), "complete": item.complete}), file=out)
    else:
        print(f"{'kind':<6} {'preset':<20} {'weights':<10} {'size':>9}  {'licence':<22} source → loads from", file=out)
        for item in statuses:
            source = item.source + (f"@{item.revision[:12]}" if item.revision else "")
            print(f"{item.kind:<6} {item.preset:<20} {item.state:<10} {human_size(item.size_bytes):>9}  "
                  f"{item.license or '-':<22} {source} → {item.location}", file=out)  # fmt: skip
            for problem in item.problems:
                print(f"{'':<6} {'':<20} {problem}", file=out)
            if item.command:
                print(f"{'':<6} {'':<20} get it: {item.command}", file=out)
    return 0 if all(item.complete for item in statuses) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tunereel.catalog", description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite the README's model section and the load-weights Job")
    add_arguments(parser)
    args = parser.parse_args(argv)
    if args.write:
        for path in write_generated():
            print(f"rewrote {path.relative_to(ROOT)}")
        return 0
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
