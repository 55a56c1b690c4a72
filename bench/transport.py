"""Benchmark 2 (issue #7): frames and PCM through the real gRPC services vs the same work in one process.

    .venv/bin/python bench/transport.py          # ~10 min on 2 cores; writes its table into docs/benchmarks.md

The music and video services run as their own processes (`python -m tunereel.{music,video}.server --preset tiny`,
what `make run` starts); the client here reads their streams the way the composer does (FrameAssembler for frames,
wire.pcm_from_bytes for PCM) and drops each frame once rebuilt. "In one process" is the same pipeline
(MusicPipeline / VideoPipeline, same preset, prompt, seed and size) called directly in this process, in a worker
thread as the services do. Frame layouts compared over gRPC: the current wire.FRAME_CHUNK_BYTES (1 MiB: two
messages per 768x512 frame) and one message per frame (2 MiB chunks, still half of gRPC's 4 MiB default). Runs alternate (direct, grpc layouts, ... reversed on the next
round); medians over --reps. A micro-benchmark of the copies alone (split → protobuf → bytes → parse → assemble,
no network) says what the layout costs per frame.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402

WIDTH, HEIGHT, FPS, SECONDS, SEED = 768, 512, 24, 10.0, 7
PROMPT_VIDEO, PROMPT_MUSIC = "a city street at night, neon lights", "electronic, upbeat, synth"
FRAME_BYTES = WIDTH * HEIGHT * 3

# A server process whose split_frame uses another chunk size (the default argument is bound at import).
SERVER = """
import functools, sys
from tunereel import wire
chunk = int(sys.argv.pop(1))
if chunk:
    wire.split_frame = functools.partial(wire.split_frame, chunk_bytes=chunk)
from tunereel.{kind}.server import main
raise SystemExit(main(sys.argv[1:]))
"""


def start(kind: str, port: int, models_dir: Path, chunk: int) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", SERVER.format(kind=kind), str(chunk), "--host", "127.0.0.1", "--port", str(port),
         "--preset", "tiny", "--models-dir", str(models_dir)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=common.ROOT,
    )  # fmt: skip


def wait_serving(target: str, service: str, timeout: float = 180.0) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                if stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2).status == 1:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.5)
    raise TimeoutError(f"{target} not serving")


def grpc_video(stub) -> tuple[float, int]:
    from tunereel import wire
    from tunereel.v1 import video_pb2

    start = time.perf_counter()
    assembler, frames, messages, first = None, 0, 0, None
    request = video_pb2.GenerateVideoRequest(prompt=PROMPT_VIDEO, width=WIDTH, height=HEIGHT, fps=FPS,
                                             num_frames=round(SECONDS * FPS), seed=SEED)
    for message in stub.GenerateVideo(request, timeout=900):
        kind = message.WhichOneof("payload")
        if kind == "header":
            assembler = wire.FrameAssembler(message.header.width, message.header.height)
        elif kind == "frame":
            messages += 1
            if first is None:
                first = time.perf_counter()
            if assembler.add(message.frame.frame_index, message.frame.offset, message.frame.data) is not None:
                frames += 1
    assert frames == round(SECONDS * FPS), frames
    end = time.perf_counter()
    return end - start, messages, end - first


def grpc_music(stub) -> tuple[float, int]:
    from tunereel import wire
    from tunereel.v1 import music_pb2

    start = time.perf_counter()
    channels, samples, messages, first = 1, 0, 0, None
    for message in stub.GenerateMusic(music_pb2.GenerateMusicRequest(prompt=PROMPT_MUSIC, duration_seconds=SECONDS,
                                                                      seed=SEED), timeout=900):
        kind = message.WhichOneof("payload")
        if kind == "header":
            channels = message.header.channels
        elif kind == "chunk":
            messages += 1
            if first is None:
                first = time.perf_counter()
            samples += wire.pcm_from_bytes(message.chunk.pcm, channels).shape[0]
    assert samples == round(SECONDS * 32000), samples
    end = time.perf_counter()
    return end - start, messages, end - first


def copies_per_frame(chunk: int, frames: int = 60) -> float:
    """ms per frame for split → FrameChunk messages → serialize → parse → assemble, no network."""
    import numpy as np

    from tunereel import wire
    from tunereel.v1 import video_pb2

    frame = common.frame(0, WIDTH, HEIGHT)
    start = time.perf_counter()
    for i in range(frames):
        assembler = wire.FrameAssembler(WIDTH, HEIGHT)
        for offset, data in wire.split_frame(frame, chunk):
            wire_bytes = video_pb2.GenerateVideoResponse(
                frame=video_pb2.FrameChunk(frame_index=0, offset=offset, data=data)).SerializeToString()
            message = video_pb2.GenerateVideoResponse.FromString(wire_bytes)
            out = assembler.add(0, message.frame.offset, message.frame.data)
        assert out is not None and np.array_equal(out[::97, ::89], frame[::97, ::89])
    return (time.perf_counter() - start) / frames * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--models-dir", type=Path, default=common.ROOT / ".cache" / "tunereel" / "models")
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args()

    import grpc

    from tunereel import wire
    from tunereel.launch import free_port
    from tunereel.music.pipeline import MusicPipeline
    from tunereel.presets import music_preset, video_preset
    from tunereel.tiny import ensure_tiny_models
    from tunereel.v1 import music_pb2_grpc, video_pb2_grpc
    from tunereel.video.pipeline import VideoPipeline

    ensure_tiny_models(args.models_dir)
    per_frame = -(-FRAME_BYTES // wire.FRAME_CHUNK_BYTES)
    layouts = {f"gRPC, {wire.FRAME_CHUNK_BYTES / 2**20:g} MiB chunks (current: {per_frame} messages per frame)": wire.FRAME_CHUNK_BYTES,
               "gRPC, one message per frame (2 MiB chunks)": 2 << 20}
    procs, stubs = [], {}
    try:
        for name, chunk in layouts.items():
            vport, mport = free_port(), free_port()
            procs += [start("video", vport, args.models_dir, chunk), start("music", mport, args.models_dir, chunk)]
            wait_serving(f"127.0.0.1:{vport}", "tunereel.v1.VideoService")
            wait_serving(f"127.0.0.1:{mport}", "tunereel.v1.MusicService")
            from tunereel.channels import open_channel
            stubs[name] = (video_pb2_grpc.VideoServiceStub(open_channel(f"127.0.0.1:{vport}")),
                           music_pb2_grpc.MusicServiceStub(open_channel(f"127.0.0.1:{mport}")))
        video = VideoPipeline.from_preset(video_preset("tiny"), args.models_dir)
        music = MusicPipeline.from_preset(music_preset("tiny"), args.models_dir)

        def in_thread(work):
            # in a worker thread, as the services run a generation (torch's thread pool behaves differently in the
            # main thread of a busy machine; a fair comparison runs the same code the same way)
            import threading

            start = time.perf_counter()
            thread = threading.Thread(target=work)
            thread.start()
            thread.join()
            return time.perf_counter() - start, 0, 0.0

        def direct_video():
            def work():
                out = video(PROMPT_VIDEO, width=WIDTH, height=HEIGHT, num_frames=round(SECONDS * FPS), fps=FPS, seed=SEED)
                assert len(out.frames) == round(SECONDS * FPS)
            return in_thread(work)

        def direct_music():
            def work():
                out = music(PROMPT_MUSIC, SECONDS, seed=SEED)
                assert out.audio.shape[0] == round(SECONDS * 32000)
            return in_thread(work)

        runs = {"video": {"in one process": direct_video}, "music": {"in one process": direct_music}}
        for name, (vstub, mstub) in stubs.items():
            runs["video"][name] = lambda s=vstub: grpc_video(s)
            runs["music"][name] = lambda s=mstub: grpc_music(s)
        for what in runs:  # warm-up: first calls load lazily-initialised kernels
            for fn in runs[what].values():
                fn()
        loads = [common.load()]
        results: dict = {}
        for rep in range(args.reps):
            for what in ("video", "music"):
                names = list(runs[what]) if rep % 2 == 0 else list(runs[what])[::-1]
                for name in names:
                    wall, messages, tail = runs[what][name]()
                    results.setdefault((what, name), []).append((wall, messages, tail))
                    print(f"{what} {name} rep {rep}: {wall:.2f} s ({messages} messages), load {common.load()}", flush=True)
            loads.append(common.load())
        copies = {name: copies_per_frame(chunk) for name, chunk in layouts.items()}
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(20)

    lines = ["| stream | path | wall s, median [min–max] | extra vs one process | first data → last, s | of the one-process wall | messages |",
             "|---|---|---|---|---|---|---|"]
    extras = {}
    for what in ("video", "music"):
        base = common.median(r[0] for r in results[(what, "in one process")])
        for name in runs[what]:
            walls = [r[0] for r in results[(what, name)]]
            tail = common.median(r[2] for r in results[(what, name)])
            extra = common.median(walls) / base - 1
            extras[(what, name)] = extra
            lines.append(f"| {what} | {name} | {common.spread(walls)} | {extra * 100:+.1f} % | "
                         f"{tail:.2f} | {tail / base * 100:.1f} % | {results[(what, name)][0][1] or '—'} |")
    copy_lines = "\n".join(f"- {name}: {ms:.2f} ms per frame" for name, ms in copies.items())
    body = f"""## Transport: gRPC streams vs one process (issue #7, 2)

Command: `.venv/bin/python bench/transport.py` (`--reps {args.reps}`).
Machine: {common.machine()}. Load average (1/5/15 min) before and after each round: {' → '.join(loads)}.
Code: {common.git_rev()}.

{SECONDS:g} s at {WIDTH}x{HEIGHT}, {FPS} fps ({round(SECONDS * FPS)} frames, {round(SECONDS * FPS) * FRAME_BYTES / 1e6:.0f} MB of RGB) and
{SECONDS:g} s of 32 kHz PCM, tiny presets (random weights, the real classes), services as separate processes on
loopback, the client reading as the composer does. Medians over {args.reps} alternated runs.

{chr(10).join(lines)}

"first data → last" is the streaming itself: from the first frame (or PCM chunk) received to the last, i.e. all
the bytes through gRPC after the model finished (the services send once a segment is decoded). The rest of the
gRPC runs' wall is the generation inside the service process.

The copies alone (split_frame → FrameChunk → serialise → parse → FrameAssembler, no network), per 768x512 frame:
{copy_lines}
"""
    print(body)
    if not args.no_doc:
        common.write_section("transport", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
