"""Peak memory of every tunereel process for a short and a long music video (the tiny models, 768x512, 24 fps).

Each duration runs on a fresh LocalStack (music, video, composer, gateway as real processes), so each process's peak
(VmHWM in /proc/<pid>/status: its largest resident set since it started) belongs to that one request; loading the
models is part of it. RSS is also sampled every 0.2 s while the request runs (the table's "during" columns are the
largest sample minus the process's RSS just before the request: what the request itself added). The MP4 is streamed
to a temporary file, never held.

    .venv/bin/python bench/memory_long.py                      # 10, 30, 60, 120, 300 s; writes docs/benchmarks.md
    .venv/bin/python bench/memory_long.py --durations 10 60 --no-write

The tiny models are all per-op overhead, so the services run with OMP_NUM_THREADS=1 (--threads): on a shared 2-core
box that is several times faster and changes no memory figure of interest.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import git_rev, load, machine, write_section  # noqa: E402

from tunereel.launch import LocalStack  # noqa: E402
from tunereel.presets import video_preset  # noqa: E402
from tunereel.segments import plan_music, plan_video  # noqa: E402
from tunereel.tiny import ensure_tiny_models  # noqa: E402

PROCESSES = ("music", "video", "composer", "gateway")


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def measure(duration: float, *, width: int, height: int, fps: int, models_dir: Path, threads: int) -> dict:
    env_before = os.environ.get("OMP_NUM_THREADS")
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        with LocalStack(models_dir=models_dir, log_dir=Path(tempfile.mkdtemp(prefix="tunereel-bench-mem-"))) as stack:
            pids = {name: stack.processes[name].pid for name in PROCESSES}
            idle = {name: _status_kb(pid, "VmRSS") for name, pid in pids.items()}
            sampled = dict(idle)
            done = threading.Event()

            def sample() -> None:
                while not done.wait(0.2):
                    for name, pid in pids.items():
                        try:
                            sampled[name] = max(sampled[name], _status_kb(pid, "VmRSS"))
                        except (OSError, KeyError):
                            pass

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            body = {"genre": "pop", "duration": duration, "video_prompt": "A beautiful sunset over the ocean.",
                    "width": width, "height": height, "fps": fps, "seed": 1}  # fmt: skip
            started = time.monotonic()
            size = 0
            with tempfile.NamedTemporaryFile(suffix=".mp4") as out:
                with httpx.stream("POST", stack.gateway_url + "/generate_content", json=body, timeout=7200.0) as reply:
                    if reply.status_code != 200:
                        raise RuntimeError(f"{reply.status_code}: {reply.read()[:500]!r}")
                    frames = int(reply.headers["X-Tunereel-Frames"])
                    for data in reply.iter_bytes(1 << 20):
                        out.write(data)
                        size += len(data)
            elapsed = time.monotonic() - started
            done.set()
            sampler.join()
            peak = {name: _status_kb(pid, "VmHWM") for name, pid in pids.items()}
    finally:
        if threads:
            if env_before is None:
                os.environ.pop("OMP_NUM_THREADS", None)
            else:
                os.environ["OMP_NUM_THREADS"] = env_before
    preset = video_preset("tiny")
    return {
        "duration_s": duration,
        "frames": frames,
        "segments": len(plan_video(frames, preset.max_frames, preset.overlap_frames)),
        "windows": len(plan_music(round(frames / fps * 32000), 640, 1500, 500)),
        "mp4_bytes": size,
        "wall_s": round(elapsed, 1),
        "peak_mib": {name: round(kb / 1024, 1) for name, kb in peak.items()},
        "idle_mib": {name: round(kb / 1024, 1) for name, kb in idle.items()},
        "during_mib": {name: round((sampled[name] - idle[name]) / 1024, 1) for name in PROCESSES},
    }


def table(runs: list[dict], width: int, height: int, fps: int, threads: int) -> str:
    short, long = runs[0], runs[-1]
    ratios = [r for r in runs[:-1]]  # the longest run against each shorter one
    durations = " ".join(format(r["duration_s"], "g") for r in runs)
    lines = [
        "## Long output memory (issue #4)",
        "",
        f"Peak resident memory of every process for one request at {width}x{height}, {fps} fps, on the tiny models "
        "(random weights, real architectures), each duration on a freshly started stack. Peak = VmHWM (includes "
        "loading the models); \"request adds\" = largest RSS sampled (every 0.2 s) during the request minus the RSS "
        "before it. The MP4 is streamed to a file by the client.",
        "",
        "```",
        f".venv/bin/python bench/memory_long.py --durations {durations} --width {width} --height {height} --fps {fps} "
        f"--threads {threads}",
        "```",
        "",
        "| process | " + " | ".join(f"peak, {r['duration_s']:g} s" for r in runs)
        + " | " + " | ".join(f"request adds, {r['duration_s']:g} s" for r in runs)
        + " | " + " | ".join(f"peak {long['duration_s']:g} s / {r['duration_s']:g} s" for r in ratios) + " |",
        "|---|" + "---:|" * (2 * len(runs) + len(ratios)),
    ]
    for name in PROCESSES:
        peaks = " | ".join(f"{r['peak_mib'][name]:.0f} MiB" for r in runs)
        adds = " | ".join(f"{r['during_mib'][name]:.0f} MiB" for r in runs)
        ratio = " | ".join(f"{long['peak_mib'][name] / r['peak_mib'][name]:.2f}" for r in ratios)
        lines.append(f"| {name} | {peaks} | {adds} | {ratio} |")
    composer = long["peak_mib"]["composer"] / short["peak_mib"]["composer"]
    # the shortest request made of full segments that continue earlier ones (music: > 1 window; video: > 1 pass)
    full = next((r for r in runs[:-1] if r["windows"] > 1 and r["segments"] > 1), None)
    services = ""
    if full is not None:
        flat = {name: long["peak_mib"][name] / full["peak_mib"][name] for name in ("music", "video")}
        services = (
            f"Services: peak at {long['duration_s']:g} s ÷ peak at {full['duration_s']:g} s (the shortest request here "
            f"whose music has a continued window and whose video has a conditioned pass): music {flat['music']:.2f}, "
            f"video {flat['video']:.2f} — "
            + ("flat (within 10 %): the peak stops growing once one full segment has been made."
               if max(flat.values()) <= 1.10 else "NOT flat: it still grows after the first full segment.")
        )
    lines += [
        "",
        services,
        "",
        "",
        f"Composer: the {long['duration_s']:g} s peak is {composer:.2f}x the {short['duration_s']:g} s one (budget: "
        f"1.3x). Frames and PCM go to the encoders as they arrive, the audio is mastered in 1 s blocks after a 20 s "
        "calibration (services/composer/stream_master.py), and the stream that is ahead waits compressed.",
        "The services hold one segment at a time: music one window (the 10 s request is a 10 s window, longer "
        "ones use full 30 s windows), video one pass (the 10 s request is one 241-frame pass; longer ones make "
        "257-frame passes, all but the first conditioned on the previous 17 frames), so their peak is that of one "
        "full segment.",
        "A video pass's working set is mostly its frames: the VAE decodes them tile by tile (64 frames) straight to "
        "uint8, 303 MB for 257 frames at 768x512 (services/video/pipeline.py, `_Uint8Decode`). A music window's is "
        "the codec's decode of up to 30 s; the windows after the first, prompted with 10 s of codes, take a little "
        "more than the first, and it stays there.",
        "",
        "| request | frames | video segments | music windows | MP4 | wall time |",
        "|---|---:|---:|---:|---:|---:|",
        *(f"| {r['duration_s']:g} s | {r['frames']} | {r['segments']} | {r['windows']} | {r['mp4_bytes'] / 2**20:.0f} MiB "
          f"| {r['wall_s']:.0f} s |" for r in runs),
        "",
        f"Machine: {machine()}; load average (1/5/15 min) at the end: {load()}; tunereel {git_rev()}.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--durations", type=float, nargs="+", default=[10.0, 30.0, 60.0, 120.0, 300.0])
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--fps", type=int, default=24)
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS for the services (0: leave as is)")
    parser.add_argument("--models-dir", type=Path, default=Path(".cache/tunereel/models"))
    parser.add_argument("--json", type=Path, default=None, help="also write the raw figures here")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    parser.add_argument("--from-json", type=Path, default=None, help="render the figures of an earlier --json run")
    args = parser.parse_args(argv)
    if args.from_json:
        text = table(json.loads(args.from_json.read_text()), args.width, args.height, args.fps, args.threads)
        print(text)
        if not args.no_write:
            write_section("long-memory", text)
        return 0
    models_dir = args.models_dir.resolve()
    ensure_tiny_models(models_dir)
    runs = []
    for duration in args.durations:
        print(f"{duration:g} s at {args.width}x{args.height} …", flush=True)
        run = measure(duration, width=args.width, height=args.height, fps=args.fps, models_dir=models_dir,
                      threads=args.threads)  # fmt: skip
        print(json.dumps(run), flush=True)
        runs.append(run)
    text = table(runs, args.width, args.height, args.fps, args.threads)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(runs, indent=2))
    if not args.no_write:
        write_section("long-memory", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
