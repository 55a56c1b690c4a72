"""A fake Hugging Face cache holding tiny MusicGen models laid out as the published facebook/musicgen-* repositories,
so the real music presets (hub ids) load offline through the real from_pretrained path."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from tunereel.presets import MUSIC_PRESETS, MusicPreset
from tunereel.tiny import build_tiny_musicgen, write_fake_hub_repo

REAL_MUSIC = [name for name, preset in MUSIC_PRESETS.items()
              if not preset.source.startswith("local:") and preset.family == "musicgen"]  # fmt: skip


def build_variants(root: Path) -> dict[tuple[int, bool, str], Path]:
    """{(channels, melody, weights format): folder} for the shapes of published MusicGen: mono, stereo, melody,
    stereo melody (safetensors), and mono as pytorch_model.bin (musicgen-medium/-large)."""
    shapes = [(channels, melody, "safetensors") for channels in (1, 2) for melody in (False, True)]
    return {
        (channels, melody, weights): build_tiny_musicgen(
            root / f"musicgen-{channels}ch-{'melody' if melody else 'text'}-{weights}",
            channels=channels, melody=melody, weights=weights,
        )  # fmt: skip
        for channels, melody, weights in [*shapes, (1, False, "bin")]
    }


def shape_of(preset: MusicPreset) -> tuple[int, bool, str]:
    weights = "bin" if any(".bin" in pattern for pattern in preset.allow_patterns) else "safetensors"
    return preset.channels, preset.model_class.startswith("MusicgenMelody"), weights


# A commit id nobody published: the table pins nothing it could not verify, so tests pin presets themselves.
FAKE_PIN = "5eed" * 10
DECOY = "d" * 40


def pinned(name: str, revision: str = FAKE_PIN) -> MusicPreset:
    """The table's preset `name`, pinned to `revision` (what a verified pin in tunereel/presets.py looks like)."""
    return replace(MUSIC_PRESETS[name], revision=revision)


def fill_cache(cache_dir: Path, variants: dict, presets=REAL_MUSIC, *, decoys: bool = True) -> None:
    """Every preset's repository (a table name or a MusicPreset, e.g. `pinned(name)`), at its revision (a fake one
    for the main branch). With `decoys`, a pinned repository's `main` points at a second snapshot of the wrong shape
    (other channel count), so loading `main` instead of the pin fails."""
    for preset in presets:
        preset = MUSIC_PRESETS[preset] if isinstance(preset, str) else preset
        channels, melody, weights = shape_of(preset)
        write_fake_hub_repo(cache_dir, preset.source, variants[channels, melody, weights], preset.revision)
        if decoys and preset.revision:
            write_fake_hub_repo(cache_dir, preset.source, variants[3 - channels, melody, "safetensors"], DECOY)


def use_offline_hub(monkeypatch, cache_dir: Path) -> None:
    """For one test, this process reads `cache_dir` as its hub cache, offline (what HF_HUB_CACHE and
    HF_HUB_OFFLINE=1 do when set before huggingface_hub is imported)."""
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache_dir))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
