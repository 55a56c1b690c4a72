"""What the music and video services share: one model per replica, loaded at start, one generation at a time,
streamed as header → progress/data messages, stopped by the caller's cancel. Each service adds only its model."""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

import grpc
import torch

from tunereel import rpc_errors
from tunereel.auth import SERVICE_KEYS_SETTING, ApiKeys, InsecureBinding
from tunereel.channels import MESSAGE_LIMIT_BYTES
from tunereel.loading import ModelMissing
from tunereel.request import LIMITS
from tunereel.presets import UnknownPreset, default_models_dir
from tunereel.segments import SegmentProgress
from tunereel.serving import GrpcServer, Turnstile, start_server
from tunereel.streaming import Cancelled, events_from_thread
from tunereel.v1 import common_pb2

__all__ = [
    "ModelHost",
    "ProgressThrottle",
    "describe_load_failure",
    "model_main",
    "progress",
    "segment_progress",
    "serve_model",
]

P = TypeVar("P")  # the pipeline type


def progress(
    stage: int,
    fraction: float,
    step: int = 0,
    total_steps: int = 0,
    message: str = "",
    *,
    segment: int = 0,
    total_segments: int = 1,
) -> common_pb2.Progress:
    return common_pb2.Progress(
        stage=stage,
        fraction=min(max(float(fraction), 0.0), 1.0),
        step=step,
        total_steps=total_steps,
        segment=segment,
        total_segments=total_segments,
        message=message,
    )


def segment_progress(stage: int, report: SegmentProgress, message: str) -> common_pb2.Progress:
    """A pipeline's SegmentProgress as the wire's Progress."""
    return progress(
        stage, report.fraction, report.step, report.total_steps, message,
        segment=report.segment, total_segments=report.total_segments,
    )  # fmt: skip


class ProgressThrottle:
    """Passes on a pipeline's step reports at a rate a progress bar needs, not one message per decoding step.

    MusicGen takes ~50 steps per second of audio; a message per step cost ~10 % of a small model's wall time in the
    stream (docs/benchmarks.md, "Transport"). Both services send their steps through it (a video denoising step is
    slow enough that each one still goes out). A report goes out when it moved the fraction by `min_fraction` *and*
    `min_interval_s` passed since the last one; the first and last step of every segment always go out, so a caller
    sees each segment start and end, and the final 1.0.
    """

    def __init__(self, send: Callable[[SegmentProgress], None], *, min_fraction: float = 0.01,
                 min_interval_s: float = 0.1, clock: Callable[[], float] = time.monotonic):  # fmt: skip
        self._send = send
        self._min_fraction = min_fraction
        self._min_interval = min_interval_s
        self._clock = clock
        self._last: SegmentProgress | None = None
        self._last_time = -float("inf")

    def __call__(self, report: SegmentProgress) -> None:
        now = self._clock()
        last = self._last
        edge = last is None or report.segment != last.segment or report.step <= 1 or report.step >= report.total_steps
        due = last is not None and report.fraction - last.fraction >= self._min_fraction and now - self._last_time >= self._min_interval
        if edge or due:
            self._last, self._last_time = report, now
            self._send(report)


def describe_load_failure(kind: str, preset: str, error: BaseException, memory_setting: str | None = None) -> str:
    """What went wrong loading a model, and what to do about it: the NOT_SERVING reason a replica reports.
    `memory_setting` names the environment variable that picks the service's GPU memory mode, if it has one."""
    message = getattr(error, "message", None)
    if isinstance(error, (ModelMissing, UnknownPreset)) or (message and not isinstance(error, torch.OutOfMemoryError)):
        return message or str(error)
    first = str(error).splitlines()[0][:300] if str(error) else type(error).__name__
    if isinstance(error, torch.OutOfMemoryError):
        modes = (
            f"choose a memory mode that keeps less on the GPU ({memory_setting}=model-offload, fp8 or group-offload; "
            f"'auto' picks one from the free memory), "
            if memory_setting else ""
        )
        return (
            f"out of GPU memory while loading {kind} preset {preset!r} ({first}): {modes}free the GPU, or use a "
            f"smaller preset; then restart the service"
        )
    if isinstance(error, ImportError):
        package = getattr(error, "name", None) or "the missing package"
        return (
            f"a package {kind} preset {preset!r} needs is not installed ({first}): install {package} into the "
            f"{kind} service's environment (image), then restart the service"
        )
    return (
        f"loading {kind} preset {preset!r} failed ({type(error).__name__}: {first}); the weights may be incomplete or "
        f"corrupt: delete them from the Hugging Face cache and download them again, then restart the service"
    )


class ModelHost(Generic[P]):
    def __init__(self, kind: str, preset_name: str, load: Callable[[str, Path | None], P], *,
                 memory_setting: str | None = None):  # fmt: skip
        self.kind = kind
        self.memory_setting = memory_setting  # env variable of the service's GPU memory mode, named in OOM messages
        self.preset_name = preset_name
        self._load = load
        self.pipeline: P | None = None
        self.load_error: str | None = "model is still loading"
        self.turnstile = Turnstile()
        self.log = logging.getLogger(f"tunereel.{kind}")

    def load(self, models_dir: Path | None) -> None:
        """Load the model; on any failure keep serving health (NOT_SERVING) with the reason, never crash (a crash
        restarts the pod into the same failure: a crash loop that says nothing)."""
        try:
            self.pipeline = self._load(self.preset_name, models_dir)
            self.load_error = None
        except Exception as error:  # noqa: BLE001 - reported as NOT_SERVING with what to do
            self.load_error = describe_load_failure(self.kind, self.preset_name, error, self.memory_setting)
            expected = isinstance(error, (ModelMissing, UnknownPreset))
            self.log.error("%s model not loaded: %s", self.kind, self.load_error, exc_info=not expected)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def check_prompt_length(self, context: grpc.ServicerContext, **prompts: str) -> None:
        """The processors are called without truncation: a prompt of any length would be tokenized whole."""
        for name, text in prompts.items():
            if len(text) > LIMITS.max_backend_prompt_chars:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              f"{name}: must be at most {LIMITS.max_backend_prompt_chars} characters")  # fmt: skip

    def ready_pipeline(self, requested_model: str, context: grpc.ServicerContext) -> P:
        """The loaded pipeline, or the call ends: FAILED_PRECONDITION when none is loaded (not ready), INVALID_ARGUMENT
        naming the `model` field when the caller asks for a preset this replica does not serve."""
        if self.pipeline is None:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"{self.kind} service: {self.load_error}")
        if requested_model and requested_model != self.preset_name:
            rpc_errors.abort_invalid_field(
                context, "model", f"model: this {self.kind} service serves preset {self.preset_name!r}, not {requested_model!r}"
            )
        return self.pipeline

    def stream(
        self,
        context: grpc.ServicerContext,
        header: Any,
        generate: Callable[[Callable[[Any], None], threading.Event], None],
        queued: Any,
    ) -> Iterator[Any]:
        """header, `queued` while another call holds the model, then whatever `generate(emit, cancelled)` emits.

        The services emit their data messages from inside `generate`, segment by segment, as they are made (a slow
        reader then slows the generation down: memory stays at one segment). The caller's cancel sets `cancelled`;
        generate must watch it (the pipelines do, once per step).
        """
        if not self.turnstile.admit():
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{self.kind} service is busy: one generation running and "
                          f"{self.turnstile.max_waiting} waiting for the model; retry later")  # fmt: skip
        context.add_callback(self.turnstile.dismiss)  # runs when the call ends, however it ends
        cancelled = threading.Event()
        context.add_callback(cancelled.set)
        # The header (it names this replica) goes out before the work starts: gRPC sends it before it asks this
        # generator for more. A caller that does not want this replica (the composer's shot retries, avoiding a
        # replica the shot failed on) cancels on reading it: a call waiting for the model then never gets it, and a
        # generation that did start stops at its first step's check.
        yield header

        def work(emit: Callable[[Any], None]) -> None:
            try:
                if not self.turnstile.enter(cancelled, lambda: emit(queued)):
                    raise Cancelled()
                self.log.info("generation started")
                try:
                    generate(emit, cancelled)
                finally:
                    self.turnstile.leave()
                    self.log.info("generation ended")  # with "started": when each replica worked (tests, the bench)
            except Cancelled:
                self.log.info("generation cancelled by the caller")
                raise

        try:
            yield from events_from_thread(work, name=self.kind, cancelled=cancelled)
        except Cancelled:
            context.abort(grpc.StatusCode.CANCELLED, f"{self.kind} generation cancelled")
        except torch.OutOfMemoryError as error:
            # This request's tensors are gone with its thread; give the cache back so the next request has it all.
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            self.log.error("%s generation ran out of GPU memory: %s", self.kind, str(error).splitlines()[0][:300])
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{self.kind} generation ran out of GPU memory and was stopped; this replica serves the next request: "
                f"ask for less (fewer frames or seconds, a smaller size)"
                + (f", or run the service in a memory mode that keeps less on the GPU ({self.memory_setting})"
                   if self.memory_setting else ""),
            )


def serve_model(
    servicer: Any, add_to_server: Callable[[Any, grpc.Server], None], service_name: str, *, host: str, port: int,
    models_dir: Path | None, max_receive_bytes: int = MESSAGE_LIMIT_BYTES,
) -> GrpcServer:
    """Start the server at once (health NOT_SERVING, so probes answer while weights load), load, then SERVING."""
    # Only the composer calls a model service, with a service key: a tenant's key is refused here.
    service_keys = ApiKeys.from_env(setting=SERVICE_KEYS_SETTING)
    server = start_server(lambda s: add_to_server(servicer, s), [service_name], host=host, port=port,
                          api_keys=service_keys, max_receive_bytes=max_receive_bytes)  # fmt: skip
    server.servicer = servicer
    servicer.host.load(models_dir)
    server.set_serving(servicer.host.pipeline is not None)
    return server


def model_main(
    kind: str, description: str, default_port: int, serve: Callable[..., GrpcServer], argv: list[str] | None
) -> int:
    parser = argparse.ArgumentParser(prog=f"tunereel-{kind}", description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=default_port)
    parser.add_argument("--preset", default="tiny", help=f"{kind} preset name (see tunereel.presets)")
    parser.add_argument("--models-dir", type=Path, default=None, help="folder of local model folders (tiny)")
    parser.add_argument(
        "--weights", default=None, help="load the preset's settings with these weights: a local folder or a hub id"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {kind} %(levelname)s %(message)s")
    try:
        server = serve(
            args.preset, host=args.host, port=args.port, models_dir=args.models_dir or default_models_dir(),
            weights=args.weights,
        )
    except InsecureBinding as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    logging.getLogger(f"tunereel.{kind}").info("%s on %s:%d (preset %s)", description, args.host, server.port, args.preset)
    server.wait_for_signals()
    return 0
