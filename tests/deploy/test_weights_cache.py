"""The gpu overlay's model servers read real presets from a Hugging Face cache on a read-only volume, offline.

The cache is laid out as `hf download` leaves it (hub/models--ORG--NAME/snapshots/REV + refs/main); the weights in
it are the tiny models (same classes as the real ones), so the exact loading path of the cluster runs here.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from dataclasses import replace

import pytest

from tests.fake_hub import FAKE_PIN
from tunereel.presets import music_preset, video_preset
from tunereel.tiny import write_fake_hub_cache, write_fake_hub_repo

# `pin`: the music preset as the table would have it with that commit pinned (None: its main branch)
LOAD = """
from dataclasses import replace
from tunereel.presets import MUSIC_PRESETS
MUSIC_PRESETS[{music!r}] = replace(MUSIC_PRESETS[{music!r}], revision={pin!r})
from tunereel.music import server as music
from tunereel.video import server as video
for module, preset in ((music, {music!r}), (video, {video!r})):
    server = module.serve(preset, host="127.0.0.1", port=0, models_dir=None)
    host = server.servicer.host
    print(preset, host.pipeline is not None, host.load_error)
    server.stop(0)
"""


def _cache_entry(hf_home, preset, folder) -> None:
    write_fake_hub_repo(hf_home / "hub", preset.source, folder, getattr(preset, "revision", None))


def _read_only(path) -> None:
    for root, folders, files in os.walk(path):
        for name in files:
            os.chmod(os.path.join(root, name), stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
        for name in folders:
            os.chmod(os.path.join(root, name), stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP)
    os.chmod(path, stat.S_IRUSR | stat.S_IXUSR)


@pytest.mark.parametrize("pin", [None, FAKE_PIN], ids=["main", "pinned"])
def test_real_presets_load_from_a_read_only_cache_without_network(models_dir, tmp_path, pin):
    hf_home = tmp_path / "hf"
    music, video = "small", "ltx-2b-distilled"  # the gpu overlay's presets
    _cache_entry(hf_home, replace(music_preset(music), revision=pin), models_dir / "tiny-musicgen")
    if pin:  # `hf download --revision <commit>` writes snapshots/<commit> and no refs/main: only the pin loads
        (hf_home / "hub" / "models--facebook--musicgen-small" / "refs" / "main").unlink()
    write_fake_hub_cache(hf_home / "hub", [video_preset(video)])  # single file + its config repo, as published
    before = _listing(hf_home)
    _read_only(hf_home)  # (root ignores modes: the listing below checks that nothing was written either way)
    home = tmp_path / "home"
    home.mkdir()
    env = {
        **os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HOME": str(home),
        "HF_ENDPOINT": "http://127.0.0.1:9",  # nothing listens there: any download attempt would fail
    }  # fmt: skip
    try:
        result = subprocess.run(
            [sys.executable, "-c", LOAD.format(music=music, video=video, pin=pin)],
            capture_output=True, text=True, timeout=180, env=env, check=False,
        )  # fmt: skip
    finally:
        for root, folders, _ in os.walk(hf_home):
            os.chmod(root, stat.S_IRWXU)
            for name in folders:
                os.chmod(os.path.join(root, name), stat.S_IRWXU)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{music} True None" in result.stdout and f"{video} True None" in result.stdout, result.stdout
    assert _listing(hf_home) == before, "loading wrote into the weights volume"


def _listing(path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(path.rglob("*"))}
