"""Upload throughput and memory: a 50 MB song through POST /v1/uploads (gateway → composer → disk, checked whole).

Starts a composer (no model services: uploads need none) and a gateway as their own processes, makes a 50 MB WAV
(16-bit stereo 44.1 kHz, 283 s: under the 300 s limit) on disk, and streams it up with httpx `--reps` times (a new
file each time, so de-duplication does not short-cut the work). Reports the wall time per upload (and so MB/s), and
each process's peak RSS (VmHWM) before the first upload and after the last: the growth is what uploading costs.
"""

from __future__ import annotations

import argparse
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402

from tunereel.launch import free_port  # noqa: E402

RATE, CHANNELS = 44_100, 2


def write_wav(path: Path, seconds: float, seed: int) -> int:
    """A 16-bit stereo WAV written piece by piece (never whole in memory); returns its size."""
    frames = round(seconds * RATE)
    data_bytes = frames * CHANNELS * 2
    with path.open("wb") as file:
        file.write(b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE")
        file.write(b"fmt " + struct.pack("<IHHIIHH", 16, 1, CHANNELS, RATE, RATE * CHANNELS * 2, CHANNELS * 2, 16))
        file.write(b"data" + struct.pack("<I", data_bytes))
        for start in range(0, frames, RATE):
            mono = common.audio_piece(start + seed * RATE, min(RATE, frames - start), RATE)[:, 0]
            stereo = np.stack([mono, mono[::-1]], axis=1)
            file.write((stereo * 32767).astype("<i2").tobytes())
    return path.stat().st_size


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=2.0)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=283.0, help="length of the WAV (283 s = 49.9 MB)")
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-uploads-"))
    composer_port, gateway_port = free_port(), free_port()
    py = [sys.executable, "-m"]
    composer = subprocess.Popen([*py, "tunereel.composer.server", "--port", str(composer_port), "--data-dir",
                                 str(work / "data"), "--music", "127.0.0.1:1", "--video", "127.0.0.1:1"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    gateway = subprocess.Popen([*py, "tunereel.gateway", "--port", str(gateway_port), "--composer",
                                f"127.0.0.1:{composer_port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{gateway_port}"
    rows = []
    try:
        wait_http(url + "/v1/limits")
        time.sleep(2.0)
        idle = peak_rss_mib(composer.pid)
        warm = work / "warm.wav"  # a 1 s upload first: the libraries an upload loads (PyAV/FFmpeg) are not its cost
        write_wav(warm, 1.0, seed=99)
        deadline = time.monotonic() + 60
        while True:  # until the composer answers
            with warm.open("rb") as file:
                reply = httpx.post(url + "/v1/uploads", files={"file": (warm.name, file, "audio/wav")}, timeout=60.0)
            if reply.status_code == 201 or time.monotonic() > deadline:
                reply.raise_for_status()
                break
            time.sleep(0.5)
        time.sleep(1.0)
        before = (peak_rss_mib(gateway.pid), peak_rss_mib(composer.pid))
        for rep in range(args.reps):
            path = work / f"song-{rep}.wav"
            size = write_wav(path, args.seconds, seed=rep)
            started = time.perf_counter()
            with path.open("rb") as file:
                reply = httpx.post(url + "/v1/uploads", files={"file": (path.name, file, "audio/wav")},
                                   timeout=httpx.Timeout(30.0, read=600.0, write=600.0))  # fmt: skip
            wall = time.perf_counter() - started
            if reply.status_code != 201:
                raise RuntimeError(f"upload failed: {reply.status_code} {reply.text}")
            rows.append((size, wall, reply.json()["duration"]))
            path.unlink()
            print(f"rep {rep}: {size / 1e6:.1f} MB in {wall:.2f} s ({size / 1e6 / wall:.1f} MB/s)", file=sys.stderr)
        after = (peak_rss_mib(gateway.pid), peak_rss_mib(composer.pid))
    finally:
        for process in (gateway, composer):
            process.terminate()
            process.wait(10)
    walls = [wall for _, wall, _ in rows]
    size = rows[0][0]
    body = f"""## Uploads: a 50 MB song through POST /v1/uploads (issue 15)

Command: `.venv/bin/python bench/uploads.py` (`--reps {args.reps}`).
Machine: {common.machine()}. Load average: {common.load()}. Code: {common.git_rev()}.

A {size / 1e6:.1f} MB WAV (16-bit stereo 44.1 kHz, {rows[0][2]:.0f} s) streamed by httpx to the gateway, which parses
the multipart body as it arrives and streams the file's bytes to the composer's UploadService in 256 KiB messages;
the composer writes it to a temporary file while hashing it, then decodes it whole with PyAV (the check: audio,
not truncated, header honest, under the duration limit) before keeping it. The wall time includes that decode.

| | value |
|---|---|
| wall per upload (median of {len(walls)}, spread) | {common.median(walls):.2f} s ({common.spread(walls)}) |
| throughput | {size / 1e6 / common.median(walls):.1f} MB/s |
| gateway peak RSS after a 1 s upload → after the 50 MB ones | {before[0]:.0f} → {after[0]:.0f} MiB (+{after[0] - before[0]:.0f}) |
| composer peak RSS after a 1 s upload → after the 50 MB ones | {before[1]:.0f} → {after[1]:.0f} MiB (+{after[1] - before[1]:.0f}) |

Neither process holds the file: the growth of each peak RSS is far below the {size / 1e6:.0f} MB uploaded. (The
composer's first upload of any size loads PyAV/FFmpeg's decoders and Pillow: {idle:.0f} → {before[1]:.0f} MiB once, the same
libraries its muxer loads for the first composition.)
"""
    print(body)
    if not args.no_doc:
        common.write_section("uploads", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
