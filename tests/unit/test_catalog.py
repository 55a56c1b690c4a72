"""`tunereel models` and what is generated from the preset table (tunereel/catalog.py): presence and completeness of
weights in a Hugging Face cache, sizes, licences, the `hf download` commands (run for real against a fake cache,
offline), the missing-weights message and the README's model section."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from tests.fake_hub import FAKE_PIN, build_variants, fill_cache, pinned
from tunereel import catalog
from tunereel.presets import MUSIC_PRESETS, VIDEO_PRESETS
from tunereel.tiny import build_tiny_musicgen, write_fake_hub_repo

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory):
    """A Hugging Face home whose hub cache holds `small` and `melody` (their main branches), nothing else."""
    home = tmp_path_factory.mktemp("hf-home")
    variants = build_variants(tmp_path_factory.mktemp("variants"))
    fill_cache(home / "hub", variants, ["small", "melody"], decoys=False)
    return home


def _env(hf_home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    return {**env, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}


def _tunereel(args: list[str], hf_home: Path, models_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "tunereel"), "models", "--models-dir", str(models_dir), *args],
                          capture_output=True, text=True, timeout=120, env=_env(hf_home), check=False)  # fmt: skip


def _row(output: str, kind: str, name: str) -> list[str]:
    """The row of one preset and the lines under it."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == [kind, name])
    end = next((i for i in range(start + 1, len(lines)) if lines[i][:1].strip()), len(lines))
    return lines[start:end]


def test_tunereel_models_lists_present_and_missing_weights(hf_home, models_dir):
    result = _tunereel(["small", "stereo-small", "music:tiny"], hf_home, models_dir)
    assert result.returncode == 1, result.stderr  # something is missing
    small = _row(result.stdout, "music", "small")
    assert small[0].split()[2] == "complete" and "CC-BY-NC-4.0" in small[0]
    revision = (hf_home / "hub" / "models--facebook--musicgen-small" / "refs" / "main").read_text()
    assert str(hf_home / "hub" / "models--facebook--musicgen-small" / "snapshots" / revision) in small[0]
    assert " KB" in small[0] or " MB" in small[0]
    assert len(small) == 1, "nothing to fetch for a complete preset"
    stereo = _row(result.stdout, "music", "stereo-small")
    assert stereo[0].split()[2] == "missing"
    assert stereo[-1].strip() == "get it: " + catalog.download_command(MUSIC_PRESETS["stereo-small"])
    tiny = _row(result.stdout, "music", "tiny")
    assert tiny[0].split()[2] == "complete" and str(models_dir / "tiny-musicgen") in tiny[0]

    assert _tunereel(["small", "melody", "music:tiny"], hf_home, models_dir).returncode == 0
    listed = _tunereel(["--json"], hf_home, models_dir)
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(r["kind"], r["preset"]) for r in rows] == [(k, p.name) for k, p in catalog.all_presets()]
    assert {r["preset"] for r in rows if r["kind"] == "music" and r["complete"]} == {"tiny", "tiny-ace-step", "small", "melody"}


def test_tunereel_models_rejects_an_unknown_preset_in_one_line(hf_home, models_dir):
    result = _tunereel(["no-such-model"], hf_home, models_dir)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "unknown preset 'no-such-model'" in result.stderr and "small" in result.stderr


def test_the_download_command_is_valid_for_hf(hf_home, tmp_path):
    """The real `hf` CLI parses each generated command; offline it answers from the cache: the cached preset's
    snapshot, and an error for the one that is not there. (One pattern per --include: patterns after a single
    --include would be taken for file names.)"""
    for name, cached in (("small", True), ("stereo-small", False)):
        command = catalog.download_command(MUSIC_PRESETS[name])
        assert command.startswith("hf download ") and "huggingface-cli" not in command
        result = subprocess.run(command.replace("hf", str(BIN / "hf"), 1), shell=True, capture_output=True,
                                text=True, timeout=120, env=_env(hf_home), check=False)  # fmt: skip
        assert "Ignoring" not in result.stderr, result.stderr
        if cached:
            assert result.returncode == 0, result.stderr
            main = (hf_home / "hub" / "models--facebook--musicgen-small" / "refs" / "main").read_text()
            assert result.stdout.strip().endswith(f"snapshots/{main}")
        else:
            assert result.returncode != 0 and "offline" in result.stderr.lower()


def test_download_commands_fetch_only_what_the_preset_loads():
    command = catalog.download_command(replace(MUSIC_PRESETS["stereo-small"], revision=None))
    files = '--include "*.json" --include model.safetensors --include "model-*-of-*.safetensors" --include spiece.model'
    assert command == f"hf download facebook/musicgen-stereo-small {files}"  # the main branch: no --revision
    assert catalog.download_command(pinned("stereo-small")) == (
        f"hf download facebook/musicgen-stereo-small --revision {FAKE_PIN} {files}"
    )
    assert ".bin" not in command and "fp32" not in command  # no pickles, no float32 copy of the stereo weights
    # musicgen-medium/-large publish no safetensors on main: their pickled weights, and nothing else heavy
    medium = catalog.download_command(MUSIC_PRESETS["medium"])
    assert "--include pytorch_model.bin" in medium and "safetensors" not in medium
    for _, preset in catalog.all_presets():
        if not catalog.is_local(preset) and getattr(preset, "single_file", None):
            assert f"--include {preset.single_file}" in catalog.download_command(preset)


def test_completeness_sees_missing_shards_and_blobs(tmp_path):
    """A sharded checkpoint with its index: complete; a lost blob or shard makes it incomplete, and says which."""
    folder = build_tiny_musicgen(tmp_path / "sharded")
    from safetensors.torch import load_file, save_file

    weights = load_file(folder / "model.safetensors")
    names = sorted(weights)
    half = len(names) // 2
    shards = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
    for shard, keys in shards.items():
        save_file({k: weights[k] for k in keys}, folder / shard, metadata={"format": "pt"})
    (folder / "model.safetensors").unlink()
    index = {"metadata": {}, "weight_map": {k: shard for shard, keys in shards.items() for k in keys}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    preset = MUSIC_PRESETS["stereo-large"]  # main branch, sharded safetensors
    cache = tmp_path / "hub"
    snapshot = write_fake_hub_repo(cache, preset.source, folder)
    state = catalog.status("music", preset, cache_dir=cache)
    assert state.complete and state.problems == () and state.command is None
    assert state.size_bytes == sum(p.stat().st_size for p in folder.iterdir())

    (snapshot / "model-00002-of-00002.safetensors").resolve().unlink()  # the blob is gone
    state = catalog.status("music", preset, cache_dir=cache)
    assert state.state == "incomplete" and "missing blobs" in state.problems[0]
    assert state.command == catalog.download_command(preset)
    (snapshot / "model-00002-of-00002.safetensors").unlink()
    state = catalog.status("music", preset, cache_dir=cache)
    assert state.problems == ("1 of 2 shard(s) named by model.safetensors.index.json are missing: model-00002-of-00002.safetensors",)

    other = pinned("small")  # pinned: a snapshot of another revision (even main's) is not it
    write_fake_hub_repo(cache, other.source, folder, "e" * 40)
    state = catalog.status("music", other, cache_dir=cache)
    assert state.state == "missing" and f"revision {FAKE_PIN} not in the cache (it has {'e' * 12})" in state.problems[0]
    assert state.command == catalog.download_command(other) and f"--revision {FAKE_PIN}" in state.command
    assert catalog.status("music", replace(other, revision=None), cache_dir=cache).complete  # main: that snapshot
    write_fake_hub_repo(cache, other.source, folder, FAKE_PIN)
    state = catalog.status("music", other, cache_dir=cache)
    assert state.complete and state.location.endswith(f"snapshots/{FAKE_PIN}")


def test_every_pin_in_the_table_is_a_full_commit_id():
    """`hf download --revision` takes a branch, tag or commit; the table pins only full commits (or nothing)."""
    for _, preset in catalog.all_presets():
        for source, revision, _ in [] if catalog.is_local(preset) else catalog.repositories(preset):
            assert revision is None or re.fullmatch(r"[0-9a-f]{40}", revision), f"{preset.name}: {source}@{revision}"


def test_the_missing_weights_message_is_the_tables_command():
    from tunereel.loading import ModelMissing, load_offline

    preset = MUSIC_PRESETS["stereo-small"]

    def loader(source, **kwargs):
        raise OSError("not cached")

    with pytest.raises(ModelMissing) as caught:
        load_offline(loader, preset.source)
    assert f"`{catalog.download_command(preset)}`" in str(caught.value) and "tunereel models" in str(caught.value)


def test_the_readme_model_section_is_generated_from_the_table():
    text = (ROOT / "README.md").read_text()
    assert catalog.generated_readme(text) == text, "README is stale: run `python -m tunereel.catalog --write`"
    section = catalog.readme_section()
    for _, preset in catalog.all_presets():
        assert f"`{preset.name}`" in section
        if not catalog.is_local(preset):
            assert all(command in section for command in catalog.download_commands(preset))
    assert "huggingface-cli" not in text
    # no second hand-written copy of a hub id anywhere else in the README
    outside = text.replace(text[text.index(catalog.README_BEGIN) : text.index(catalog.README_END)], "")
    for _, preset in catalog.all_presets():
        if not catalog.is_local(preset):
            assert preset.source not in outside, preset.source


def test_a_real_preset_loads_with_the_environment_alone(hf_home):
    """HF_HOME + HF_HUB_OFFLINE=1 set before start, as in the image: the melody preset (hub id) serves."""
    code = (
        "from tunereel.music import server\n"
        "s = server.serve('melody', host='127.0.0.1', port=0, models_dir=None)\n"
        "h = s.servicer.host\n"
        "print(type(h.pipeline.model).__name__, h.pipeline.channels, h.load_error)\n"
        "s.stop(0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180,
                            env=_env(hf_home), cwd=ROOT, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-3:] == ["MusicgenMelodyForConditionalGeneration", "1", "None"]


def test_video_presets_are_listed_through_the_shared_fields():
    rows = [(kind, p.name) for kind, p in catalog.all_presets() if kind == "video"]
    assert rows == [("video", name) for name in VIDEO_PRESETS]
