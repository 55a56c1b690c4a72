"""Benchmark 3 (issue #7): music and video in flight together vs each alone.

    .venv/bin/python bench/concurrency.py        # ~10 min on 2 cores; writes its table into docs/benchmarks.md

Three service processes as `make run` starts them: music (preset `small` with the full-size random musicgen-small of
bench/musicgen_small_random.py, so int8-accelerated as the service runs it), video (preset `tiny` LTX-Video at
768x512, 4 steps) and the composer. One request ({SECONDS} s, 768x512, 24 fps, fixed seed), sized so that each model
takes several seconds here, measured three ways, alternated (A B C, C B A, ...), medians over --reps:
  A  music alone: MusicService.GenerateMusic with exactly what the composer asks for, stream drained;
  B  video alone: VideoService.GenerateVideo likewise, frames rebuilt;
  C  end to end: ComposerService.Compose (both backends at once, mastering, muxing, the MP4 streamed back).
Each service process's CPU seconds (from /proc) give the floor a 2-core machine allows when both run at once:
wall ≥ (CPU of music + video + composer) / cores.

    .venv/bin/python bench/concurrency.py --pin   # each model service on a core of its own, as deployed

`--pin` gives the music and the video process one core each (sched_setaffinity, one torch thread), the layout of a
deployment where each service has its own GPU or node: the question is then what running both at once costs
beyond the slower of the two, not how two models share one CPU. The composer is not pinned.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402
import musicgen_small_random  # noqa: E402

SECONDS = 4.0
REQUEST = {"genre": "electronic", "duration": SECONDS, "video_prompt": "a city street at night, neon lights",
           "seed": 99, "width": 768, "height": 512, "fps": 24}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def wait_serving(target: str, timeout: float = 300.0) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                if stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status == 1:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.5)
    raise TimeoutError(f"{target} not serving after {timeout:.0f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--models-dir", type=Path, default=common.ROOT / ".cache" / "tunereel" / "models")
    parser.add_argument("--service-threads", type=int, default=None,
                        help="OMP_NUM_THREADS for the music and video processes (default: torch's, one per core)")
    parser.add_argument("--pin", action="store_true",
                        help="music on core 0, video on core 1, one torch thread each (the deployed layout)")
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args()

    from tunereel import wire
    from tunereel.channels import open_channel
    from tunereel.launch import free_port
    from tunereel.request import validate_request
    from tunereel.tiny import ensure_tiny_models
    from tunereel.v1 import composer_pb2, composer_pb2_grpc, music_pb2, music_pb2_grpc, video_pb2, video_pb2_grpc

    ensure_tiny_models(args.models_dir)
    folder = musicgen_small_random.build()
    ports = {name: free_port() for name in ("music", "video", "composer")}
    target = {name: f"127.0.0.1:{port}" for name, port in ports.items()}
    py = [sys.executable, "-m"]
    work = Path(tempfile.mkdtemp(prefix="tunereel-bench-conc-"))
    commands = {
        "music": [*py, "tunereel.music.server", "--port", str(ports["music"]), "--preset", "small", "--weights", str(folder)],
        "video": [*py, "tunereel.video.server", "--port", str(ports["video"]), "--preset", "tiny",
                  "--models-dir", str(args.models_dir)],
        "composer": [*py, "tunereel.composer.server", "--port", str(ports["composer"]), "--music", target["music"],
                     "--video", target["video"], "--data-dir", str(work / "data")],
    }  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    if args.pin:
        args.service_threads = 1
        if (os.cpu_count() or 1) < 2:
            parser.error("--pin needs two cores")
    model_env = {**env, **({"OMP_NUM_THREADS": str(args.service_threads)} if args.service_threads else {})}
    procs = {name: subprocess.Popen(cmd, env=model_env if name != "composer" else env, stdout=subprocess.DEVNULL, stderr=open(work / f"{name}.log", "wb"),
                                    cwd=common.ROOT) for name, cmd in commands.items()}
    if args.pin:
        os.sched_setaffinity(procs["music"].pid, {0})
        os.sched_setaffinity(procs["video"].pid, {1})
    try:
        for name in ("music", "video", "composer"):
            wait_serving(target[name])
        request = validate_request(REQUEST)
        music = music_pb2_grpc.MusicServiceStub(open_channel(target["music"]))
        video = video_pb2_grpc.VideoServiceStub(open_channel(target["video"]))
        composer = composer_pb2_grpc.ComposerServiceStub(open_channel(target["composer"]))

        def music_alone():
            samples = 0
            for m in music.GenerateMusic(music_pb2.GenerateMusicRequest(
                    prompt=request.music_prompt, duration_seconds=request.exact_duration, seed=request.seed), timeout=900):
                if m.WhichOneof("payload") == "chunk":
                    samples += m.chunk.num_samples
            return f"{samples} samples"

        def video_alone():
            assembler = wire.FrameAssembler(request.width, request.height)
            for m in video.GenerateVideo(video_pb2.GenerateVideoRequest(
                    prompt=request.video_prompt, width=request.width, height=request.height, fps=request.fps,
                    num_frames=request.frame_count, seed=request.seed), timeout=900):
                if m.WhichOneof("payload") == "frame":
                    assembler.add(m.frame.frame_index, m.frame.offset, m.frame.data)
            return f"{assembler.frames_done} frames"

        def end_to_end():
            size = 0
            for m in composer.Compose(composer_pb2.ComposeRequest(request=wire.request_to_proto(request)), timeout=900):
                if m.WhichOneof("payload") == "chunk":
                    size += len(m.chunk.data)
            return f"{size / 1e6:.2f} MB MP4"

        runs = {"A music alone": music_alone, "B video alone": video_alone, "C end to end (both at once + mux)": end_to_end}
        for fn in runs.values():  # warm-up
            fn()
        loads = [common.load()]
        walls: dict = {name: [] for name in runs}
        cpus: dict = {name: [] for name in runs}
        names = list(runs)
        for rep in range(args.reps):
            for name in names if rep % 2 == 0 else names[::-1]:
                before = {n: cpu_seconds(p.pid) for n, p in procs.items()}
                start = time.perf_counter()
                what = runs[name]()
                wall = time.perf_counter() - start
                used = {n: cpu_seconds(p.pid) - before[n] for n, p in procs.items()}
                walls[name].append(wall)
                cpus[name].append(used)
                print(f"{name} rep {rep}: {wall:.2f} s ({what}); CPU s "
                      + ", ".join(f"{n} {c:.1f}" for n, c in used.items()) + f"; load {common.load()}", flush=True)
            loads.append(common.load())
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            p.wait(30)

    med = {name: common.median(walls[name]) for name in names}
    a, b, c = (med[n] for n in names)
    cpu_c = {n: common.median(u[n] for u in cpus[names[2]]) for n in procs}
    floor = max(max(a, b), sum(cpu_c.values()) / (os.cpu_count() or 1))
    section = "concurrency" + ("-pinned" if args.pin else f"-{args.service_threads}t" if args.service_threads else "")
    lines = ["| run | wall s, median [min–max] | CPU s (music / video / composer processes) |", "|---|---|---|"]
    for name in names:
        cpu = {n: common.median(u[n] for u in cpus[name]) for n in procs}
        lines.append(f"| {name} | {common.spread(walls[name])} | {cpu['music']:.1f} / {cpu['video']:.1f} / {cpu['composer']:.1f} |")
    ratio = c / max(a, b)
    title = "music and video in flight together" + (", a core each" if args.pin else "")
    body = f"""## Concurrency: {title} (issue #7, 3)

Command: `.venv/bin/python bench/concurrency.py` (`--reps {args.reps}{' --pin' if args.pin else f' --service-threads {args.service_threads}' if args.service_threads else ''}`).
Torch threads in the music and video processes: {args.service_threads or 'default (one per core)'}{'; music pinned to core 0, video to core 1 (a core each, as each service has its own GPU when deployed); the composer on either' if args.pin else ''}.
Machine: {common.machine()}. Load average (1/5/15 min) before and after each round: {' → '.join(loads)}.
Code: {common.git_rev()}.

One {SECONDS:g} s request at 768x512, 24 fps ({request.frame_count} frames): music = full-size musicgen-small (random
weights, the service's int8 acceleration), video = tiny LTX-Video (4 steps), services and composer as processes.

{chr(10).join(lines)}

End to end ÷ max(alone) = {c:.2f} / {max(a, b):.2f} = **{ratio:.2f}** (target ≤ 1.1: {'met' if ratio <= 1.1 else 'NOT met'}).
The floor on this machine: both models at once need {sum(cpu_c.values()):.1f} CPU seconds on {os.cpu_count()} cores, so no
schedule finishes before {floor:.2f} s = {floor / max(a, b):.2f} x max(alone); end to end is {c / floor:.2f} x that floor.
"""
    print(body)
    if not args.no_doc:
        common.write_section(section, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
