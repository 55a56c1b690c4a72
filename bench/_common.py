"""Shared by the bench/ scripts: synthetic media, the machine's description, medians, and docs/benchmarks.md sections.

Only numpy and the standard library here: bench/mux_encode.py also imports this from the moviepy environment.
"""

from __future__ import annotations

import math
import os
import platform
import re
import statistics
import subprocess
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"


# ------------------------------------------------------------------------------------------------ synthetic media
def frame(i: int, width: int = 768, height: int = 512) -> np.ndarray:
    """Frame i of a deterministic moving picture (gradients, a moving disc, fine texture): x264 has real work to do
    (motion, detail) without the pathological bitrate of white noise. HxWx3 uint8 RGB."""
    y = np.arange(height, dtype=np.float32)[:, None]
    x = np.arange(width, dtype=np.float32)[None, :]
    t = i / 24.0
    r = 127.5 + 127.5 * np.sin(x / 37.0 + t * 1.3) * np.cos(y / 53.0 - t * 0.7)
    g = 127.5 + 127.5 * np.sin((x + y) / 71.0 - t * 2.1)
    cx, cy = width / 2 + width / 3 * math.cos(t), height / 2 + height / 3 * math.sin(1.7 * t)
    disc = ((x - cx) ** 2 + (y - cy) ** 2) < (height / 6) ** 2
    b = np.where(disc, 255.0, 40.0 + 30.0 * np.sin(x / 3.0) * np.sin(y / 3.0 + t))
    return np.stack(np.broadcast_arrays(r, g, b), axis=-1).astype(np.uint8)


def audio_piece(start: int, count: int, rate: int = 32000) -> np.ndarray:
    """Samples [start, start+count) of a deterministic music-like mono signal: a chord with a 120 bpm pulse and a
    little noise, float32 (count, 1). Made piece by piece, so a long signal never exists whole unless asked for."""
    t = (start + np.arange(count)) / rate
    chord = sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.18, 329.63, 440.0)) / 4
    beat = 0.6 + 0.4 * np.abs(np.sin(np.pi * 2.0 * t))
    noise = np.random.default_rng(start).standard_normal(count) * 0.02
    return (0.3 * chord * beat + noise).astype(np.float32)[:, None]


def audio(seconds: float, rate: int = 32000, piece: int = 32000) -> np.ndarray:
    """The whole signal (what the prototype holds), built from the same pieces."""
    n = round(seconds * rate)
    return np.concatenate([audio_piece(s, min(piece, n - s), rate) for s in range(0, n, piece)])


# ------------------------------------------------------------------------------------------------- the machine
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def machine() -> str:
    flags = ""
    try:
        text = Path("/proc/cpuinfo").read_text()
        have = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile") if re.search(rf"\b{f}\b", text)]
        flags = ", ".join(have)
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({cpu_model()}; {flags}), {platform.system()} {platform.release()}, Python {platform.python_version()}"


# ------------------------------------------------------------------------------------------------------ numbers
def median(values) -> float:
    return statistics.median(values)


def spread(values) -> str:
    """median [min-max] for a list of numbers."""
    return f"{median(values):.2f} [{min(values):.2f}–{max(values):.2f}]"


def git_rev() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout
        return out.stdout.strip() + ("+uncommitted" if dirty.strip() else "")
    except OSError:
        return "unknown"


# ------------------------------------------------------------------------------------------- docs/benchmarks.md
def write_section(key: str, body: str) -> None:
    """Replace (or append) this script's own section of docs/benchmarks.md, between markers; other sections stay."""
    begin, end = f"<!-- bench:{key}:begin -->", f"<!-- bench:{key}:end -->"
    block = f"{begin}\n{body.rstrip()}\n{end}\n"
    DOC.parent.mkdir(parents=True, exist_ok=True)
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n\nEvery figure is measured on the machine named with it.\n\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + block + ("\n" + tail.lstrip("\n") if tail.strip() else "")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    DOC.write_text(text)
