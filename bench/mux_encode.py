"""Benchmark 1 (issue #7): mux and encode — the prototype's moviepy path vs a bare libx264 encode vs tunereel's mux.

    .venv/bin/python bench/mux_encode.py            # ~20 min on 2 cores; writes its table into docs/benchmarks.md

Same synthetic 768x512 24 fps frames and 32 kHz mono audio (bench/_common.py) for 10, 20 and 60 s through:
  (a) prototype: moviepy `ImageSequenceClip(list_of_frames)` + `AudioFileClip(wav)` + `write_videofile(libx264, aac)`,
      run in its own environment bench/.venv-moviepy (created here on first use; moviepy is never a tunereel
      dependency). Its ffmpeg is the one imageio-ffmpeg ships. As the prototype, it holds every frame in a list and
      writes the audio to a WAV file first. Given tunereel's x264 settings (veryfast, crf 23, yuv420p) and 32 kHz AAC
      at 128 kb/s, so only the path differs.
  (b) floor: the frames alone through PyAV's libx264 (FFmpeg's libraries in the PyAV wheel, in process): RGB →
      yuv420p BT.709 (swscale) → libx264 veryfast crf 23 → MP4, no audio, no faststart.
  (b') the floor with libx264 frame threads (what the ffmpeg program, and so moviepy, uses) instead of PyAV's default
      slice threads: what the same encoder could do in tunereel's process.
  (c) tunereel: the composer's mux path without gRPC — frames and 1 s PCM chunks in time order into the composer's
      audio mastering (the composer's AudioTrack: StreamingMaster, -14 LUFS, true-peak limiter, AAC-verified)
      and `Mp4Muxer` (libx264 veryfast crf 23 yuv420p BT.709 + AAC, +faststart, strict interleave). The audio is
      mastered and encoded on the track's own thread, the frames on the caller's (as in the composer). Arriving
      in lock step with the frames is the worst case: a song of up to 30 s is mastered whole once its last sample
      is in, i.e. after the last frame, with nothing left to overlap it.
  (c') the same, with the whole song in before the first frame: the service's usual order (MusicGen finishes
      long before LTX-Video), where the mastering overlaps the frames' encoding.
Each run is a fresh process; variants alternate (a b c, then c b a, ...), medians over --reps. Wall: from the first
frame to the closed file (the frames are made before timing starts). Peak RSS: the worker's whole process tree
(for (a): python plus the ffmpeg processes moviepy starts), summed from /proc every 20 ms (ru_maxrss of children
would count the parent's pages at fork). The frames come from a precomputed 2 s loop of 48 distinct frames; (a)
gets a list of distinct copies (as the prototype got from its video model), (b) and (c) get them one at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402

WIDTH, HEIGHT, FPS, RATE = 768, 512, 24, 32000
MOVIEPY_ENV = common.ROOT / "bench" / ".venv-moviepy"
VARIANTS = ("a", "b", "c", "d", "f")
NAMES = {"a": "(a) prototype: moviepy", "b": "(b) floor: bare libx264 (PyAV)", "c": "(c) tunereel composer mux",
         "d": "(c') tunereel, the music all in before the frames",
         "f": "(b') floor with x264 frame threads"}


def _rss_mib(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024.0  # KiB on Linux


def _base_frames() -> list:
    return [common.frame(i, WIDTH, HEIGHT) for i in range(2 * FPS)]


# ----------------------------------------------------------------------------------------------------- workers
def worker_a(seconds: float, out: Path) -> dict:
    import wave

    try:
        from moviepy import AudioFileClip, ImageSequenceClip  # moviepy 2
    except ImportError:  # moviepy 1
        from moviepy.editor import AudioFileClip, ImageSequenceClip
    n = round(seconds * FPS)
    base = _base_frames()
    frames = [base[i % len(base)].copy() for i in range(n)]  # the prototype's list of frames from the video model
    del base
    pcm = common.audio(seconds, RATE)
    start = time.perf_counter()
    wav = out.with_suffix(".wav")
    with wave.open(str(wav), "wb") as w:  # the prototype wrote the music to a WAV file for AudioFileClip
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(RATE)
        w.writeframes((pcm[:, 0].clip(-1, 1) * 32767).astype("<i2").tobytes())
    clip = ImageSequenceClip(frames, fps=FPS)
    sound = AudioFileClip(str(wav))
    clip = clip.with_audio(sound) if hasattr(clip, "with_audio") else clip.set_audio(sound)
    clip.write_videofile(
        str(out), fps=FPS, codec="libx264", audio_codec="aac", audio_fps=RATE, audio_bitrate="128k",
        preset="veryfast", ffmpeg_params=["-crf", "23", "-pix_fmt", "yuv420p"], logger=None,
    )  # fmt: skip
    sound.close()
    clip.close()
    wall = time.perf_counter() - start
    return {"wall": wall, "rss": _rss_mib(resource.RUSAGE_SELF), "rss_detail": "python only"}


def worker_f(seconds: float, out: Path) -> dict:
    """The floor with the encoder's threads as the ffmpeg program sets them (frame threads, not PyAV's slices)."""
    return worker_b(seconds, out, thread_type="FRAME")


def worker_b(seconds: float, out: Path, thread_type: str | None = None) -> dict:
    import av
    from av.video.reformatter import ColorRange, Colorspace

    n = round(seconds * FPS)
    base = _base_frames()
    start = time.perf_counter()
    with av.open(str(out), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=FPS, options={"crf": "23", "preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        cc = stream.codec_context
        if thread_type:
            cc.thread_type = thread_type
        cc.colorspace = cc.color_primaries = cc.color_trc = 1  # BT.709, as Mp4Muxer
        cc.color_range = 1
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(base[i % len(base)], format="rgb24")
            frame = frame.reformat(format="yuv420p", dst_colorspace=Colorspace.ITU709, dst_color_range=ColorRange.MPEG)
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    wall = time.perf_counter() - start
    return {"wall": wall, "rss": _rss_mib(resource.RUSAGE_SELF), "rss_detail": ""}


def worker_d(seconds: float, out: Path) -> dict:
    """(c) with the whole song arriving before the first frame, as in the service, where MusicGen finishes first."""
    return worker_c(seconds, out, music_first=True)


def worker_c(seconds: float, out: Path, music_first: bool = False) -> dict:
    from tunereel import wire
    from tunereel.composer.audio import AudioTrack, StreamingMaster
    from tunereel.composer.muxer import AudioSpec, Mp4Muxer, VideoSpec

    n = round(seconds * FPS)
    base = _base_frames()
    total = round(seconds * RATE)
    spec = AudioSpec(sample_rate=RATE, channels=1)
    step = wire.AUDIO_CHUNK_SAMPLES
    start = time.perf_counter()
    # As services/composer/compose.py does it: frames on this thread, the audio mastered and encoded on the track's.
    track = AudioTrack(StreamingMaster(spec, total))
    with Mp4Muxer(out, VideoSpec(WIDTH, HEIGHT, FPS), spec, metadata={"comment": "{}"}) as mux:
        track.attach(mux)
        sent = 0
        for i in range(n + 1):
            # the music arrives in 1 s chunks (wire.AUDIO_CHUNK_SAMPLES, as the music service sends) beside the frames
            while sent < total and (i == n or music_first or sent <= (i + 1) * RATE // FPS):
                track.push(common.audio_piece(sent, min(step, total - sent), RATE))
                sent += step
                if sent >= total:
                    track.end()  # the music stream ended: the composer calls this on "music-done"
            if i < n:
                mux.add_frame(base[i % len(base)])
        track.join()
    wall = time.perf_counter() - start
    return {"wall": wall, "rss": _rss_mib(resource.RUSAGE_SELF), "rss_detail": "AudioTrack(StreamingMaster)"}


WORKERS = {"a": worker_a, "b": worker_b, "c": worker_c, "d": worker_d, "f": worker_f}


# ------------------------------------------------------------------------------------------------ orchestration
def ensure_moviepy_env() -> Path:
    python = MOVIEPY_ENV / "bin" / "python"
    if not python.exists() or subprocess.run([python, "-c", "import moviepy"], capture_output=True).returncode:
        subprocess.run([sys.executable, "-m", "venv", str(MOVIEPY_ENV)], check=True)
        subprocess.run([python, "-m", "pip", "install", "-q", "moviepy", "numpy"], check=True)
    return python


def _tree_rss_mib(pid: int) -> float:
    """Resident memory of a process and all its descendants, from /proc (MiB)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return total / 1024.0


def run_one(variant: str, seconds: float, workdir: Path, moviepy_python: Path) -> dict:
    """One fresh worker process; its process tree's RSS is sampled every 20 ms (children included: moviepy's ffmpeg)."""
    python = moviepy_python if variant == "a" else Path(sys.executable)
    out = workdir / f"{variant}-{seconds:g}.mp4"
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        proc = subprocess.Popen(
            [str(python), __file__, "--worker", variant, "--seconds", str(seconds), "--out", str(out)],
            stdout=stdout, stderr=stderr, text=True, cwd=common.ROOT,
        )  # fmt: skip
        peak = 0.0
        while proc.poll() is None:
            peak = max(peak, _tree_rss_mib(proc.pid))
            time.sleep(0.02)
        stdout.seek(0), stderr.seek(0)
        if proc.returncode:
            raise RuntimeError(f"variant {variant} at {seconds} s failed:\n{stderr.read()[-3000:]}")
        result = json.loads(stdout.read().strip().splitlines()[-1])
    result["tree_rss"] = peak
    result["size"] = out.stat().st_size
    out.unlink()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", default="10,20,60")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--worker", choices=VARIANTS)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--no-doc", action="store_true", help="print the table only")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(WORKERS[args.worker](float(args.seconds), args.out)))
        return 0

    moviepy_python = ensure_moviepy_env()
    mp_version = subprocess.run([moviepy_python, "-c", "import moviepy; print(moviepy.__version__)"],
                                capture_output=True, text=True).stdout.strip()
    import av

    durations = [float(s) for s in args.seconds.split(",")]
    loads = [common.load()]
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="tunereel-bench-mux-") as tmp:
        for seconds in durations:
            for rep in range(args.reps):
                order = VARIANTS if rep % 2 == 0 else VARIANTS[::-1]
                for variant in order:
                    r = run_one(variant, seconds, Path(tmp), moviepy_python)
                    results.setdefault((seconds, variant), []).append(r)
                    print(f"{seconds:>4g} s {variant} rep {rep}: {r['wall']:.2f} s, tree {r['tree_rss']:.0f} MiB, "
                          f"ru_maxrss {r['rss']:.0f} MiB ({r['rss_detail']}), load {common.load()}", flush=True)
            loads.append(common.load())

    lines = [
        "| length | path | wall s, median [min–max] | wall ÷ floor | peak RSS MiB | RSS ÷ (a) | file MB |",
        "|---|---|---|---|---|---|---|",
    ]
    verdict = []
    for seconds in durations:
        floor = common.median(r["wall"] for r in results[(seconds, "b")])
        proto_rss = common.median(r["tree_rss"] for r in results[(seconds, "a")])
        for variant in VARIANTS:
            rs = results[(seconds, variant)]
            wall = [r["wall"] for r in rs]
            rss = common.median(r["tree_rss"] for r in rs)
            lines.append(
                f"| {seconds:g} s | {NAMES[variant]} | {common.spread(wall)} | {common.median(wall) / floor:.3f} | "
                f"{rss:.0f} | {rss / proto_rss:.2f} | "
                f"{common.median(r['size'] for r in rs) / 1e6:.1f} |"
            )
        c_wall = common.median(r["wall"] for r in results[(seconds, "c")]) / floor
        c_rss = common.median(r["tree_rss"] for r in results[(seconds, "c")])
        d_wall = common.median(r["wall"] for r in results[(seconds, "d")]) / floor
        verdict.append((seconds, c_wall, c_rss, proto_rss, d_wall))
    c_rss_all = [v[2] for v in verdict]
    last = verdict[-1]
    body = f"""## Mux and encode: prototype vs floor vs tunereel (issue #7, 1)

Command: `.venv/bin/python bench/mux_encode.py` (`--reps {args.reps}`; about 20 minutes on 2 cores).
Machine: {common.machine()}. Load average (1/5/15 min) before and after each length: {' → '.join(loads)}.
Code: {common.git_rev()}; PyAV {av.__version__} (FFmpeg libraries and libx264 from its wheel); moviepy {mp_version}
in bench/.venv-moviepy (ffmpeg from imageio-ffmpeg). The composer's audio path here: {results[(durations[0], 'c')][0]['rss_detail']}.

768x512, 24 fps, 32 kHz mono; every path uses libx264 veryfast crf 23 yuv420p (and AAC 128 kb/s where there is
audio). (a) and (c) include their audio work: (a) writes a WAV and moviepy reads it back through ffmpeg; (c) includes
the composer's loudness mastering (-14 LUFS, true-peak limiter, AAC round trip) and +faststart. (b) is video only.
Ratios are of medians over {args.reps} runs per cell, variants interleaved (a b c, c b a, ...) in fresh processes.

{chr(10).join(lines)}

Targets: (c) within 10 % of (b): {', '.join(f'{s:g} s: {w:.3f}x' for s, w, *_ in verdict)} —
{'met' if all(w <= 1.10 for _, w, *_ in verdict) else 'NOT met'}; with the music in first (c'):
{', '.join(f'{v[0]:g} s: {v[4]:.3f}x' for v in verdict)} —
{'met' if all(v[4] <= 1.10 for v in verdict) else 'NOT met'}. (c)'s peak RSS ≤ 1/3 of (a)'s at {last[0]:g} s:
{last[2]:.0f} vs {last[3]:.0f} MiB = {last[2] / last[3]:.2f} — {'met' if last[2] <= last[3] / 3 else 'NOT met'}; flat in duration:
{' / '.join(f'{r:.0f}' for r in c_rss_all)} MiB for {' / '.join(f'{s:g}' for s in durations)} s
({'flat' if max(c_rss_all) - min(c_rss_all) <= 0.1 * min(c_rss_all) else 'NOT flat'}: within 10 %).
"""
    print(body)
    if not args.no_doc:
        common.write_section("mux", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
