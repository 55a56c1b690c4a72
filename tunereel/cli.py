"""`tunereel`: make music videos from the terminal through the HTTP job API, and start the services.

    tunereel generate --genre pop --duration 15 --prompt "A sunset over the ocean" -o out.mp4
    tunereel jobs list | show ID | cancel ID
    tunereel serve
    tunereel models            # each preset's weights: present? complete? size, licence, the `hf download` command

Errors are one line on stderr and a non-zero exit; Ctrl-C during `generate` cancels the job.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
import uuid
from pathlib import Path
from typing import NoReturn

import httpx

from tunereel.request import LIMITS, check_repaint_range
from tunereel.wire import enum_names

__all__ = ["main"]

DEFAULT_SERVER = "http://127.0.0.1:8000"
NAMES = enum_names()  # the proto enums' names, as the API sends them
STAGES = tuple(NAMES["generation_stages"])
TERMINAL = frozenset(NAMES["terminal_states"])
# The events stream broke off (a gateway restart, a network blip): listen again this many times in a row, waiting a
# little longer each time, before giving up with an error.
MAX_RECONNECTS = 8
RECONNECT_DELAY_S = 0.5


class CliError(Exception):
    """A problem to report in one line."""


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class SceneAction(argparse.Action):
    """--scene PROMPT: a scene, {"prompt": PROMPT}, in the order given (an --image after it may add its image)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        scenes = list(getattr(namespace, self.dest, None) or [])
        scenes.append({"prompt": values})
        setattr(namespace, self.dest, scenes)


class ImageAction(argparse.Action):
    """--image FILE pairs with the --scene just before it; before any --scene it is the whole video's image."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        scenes = getattr(namespace, "scene", None)
        if scenes:
            if "image" in scenes[-1]:
                parser.error(f"--image: scene {len(scenes)} ({scenes[-1]['prompt']!r}) already has an image")
            scenes[-1]["image"] = values
        elif getattr(namespace, self.dest, None) is not None:
            parser.error("--image: the video already has an image; give a --scene before each scene's image")
        else:
            setattr(namespace, self.dest, values)


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="tunereel", description="Genre + duration + video prompt → an MP4 music video.")
    parser.add_argument("--server", default=os.environ.get("TUNEREEL_SERVER", DEFAULT_SERVER), help="gateway URL (TUNEREEL_SERVER)")
    parser.add_argument("--api-key", default=os.environ.get("TUNEREEL_API_KEY"), help="API key (TUNEREEL_API_KEY)")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    generate = commands.add_parser("generate", help="make a music video and download it")
    generate.add_argument("--genre", help="required unless --song")
    generate.add_argument("--duration", type=float, help="seconds (with --song: default to the song's end)")
    generate.add_argument("--prompt", required=True, help="what the video shows")
    generate.add_argument("--mood")
    generate.add_argument("--tempo", type=int, help="beats per minute")
    generate.add_argument("--instruments", help="comma-separated, e.g. piano,drums")
    generate.add_argument("--seed", type=int)
    generate.add_argument("--width", type=int)
    generate.add_argument("--height", type=int)
    generate.add_argument("--fps", type=int)
    generate.add_argument("--music-model")
    generate.add_argument("--video-model")
    generate.add_argument("--song", type=Path, help="your own song (mp3, wav, flac, m4a, ogg): the video's music")
    generate.add_argument("--start", type=float, help="with --song: where in the song the video starts, seconds")
    generate.add_argument("--normalize", action="store_true", help="with --song: bring it to -14 LUFS")
    generate.add_argument("--repaint", nargs=2, type=_seconds, metavar=("START", "END"),
                          help="with --song and --genre: re-make this range of it (seconds of the video's music, "
                          "0 = --start) and keep the rest (music models that repaint, e.g. ACE-Step)")
    generate.add_argument("--melody", type=Path, help="a clip whose melody the music follows (melody presets)")
    generate.add_argument("--image", type=Path, action=ImageAction,
                          help="an image (png, jpeg, webp): after a --scene, that scene's shots start from it; "
                          "before any --scene, the whole video's (each scene without its own)")
    generate.add_argument("--lyrics", type=Path, metavar="FILE", help="song lyrics from a text file (singing music models)")
    generate.add_argument("--vocal-language", help="language code of the lyrics, e.g. en")
    generate.add_argument("--key", help="musical key, e.g. 'C major' (singing music models)")
    generate.add_argument("--time-signature", help="beats per bar, e.g. 4 (singing music models)")
    generate.add_argument("--scene", action=SceneAction, metavar="PROMPT",
                          help="a scene's prompt; repeat for several scenes, in song order (default: --prompt); "
                          "an --image right after it is the scene's")
    generate.add_argument("--cuts", choices=["auto", "bar", "beat", "none"],
                          help="how the video cuts with the music (server default: auto)")
    generate.add_argument("--cut-every-beats", type=_beats_per_cut, metavar="N",
                          help=f"with --cuts beat: a cut every N beats, 1-{LIMITS.max_cut_every_beats} (default 1)")
    generate.add_argument("-o", "--output", type=Path, default=None, help="where to write the MP4 (default tunereel-ID.mp4)")
    generate.add_argument("--no-progress", action="store_true", help="print one line per state instead of bars")

    jobs = commands.add_parser("jobs", help="list, show or cancel jobs")
    job_commands = jobs.add_subparsers(dest="action", required=True, parser_class=OneLineParser)
    listing = job_commands.add_parser("list", help="newest first")
    listing.add_argument("--limit", type=int, default=20)
    job_commands.add_parser("show", help="one job as JSON").add_argument("id")
    job_commands.add_parser("cancel", help="cancel a job").add_argument("id")

    from tunereel.catalog import add_arguments as models_arguments

    models_arguments(commands.add_parser("models", help="each preset's weights: where from, present, size, licence, how to get"))

    serve = commands.add_parser("serve", help="start every service locally (what `make run` starts)")
    serve.add_argument("rest", nargs=argparse.REMAINDER, help="options for tunereel.launch (see --help there)")
    return parser


class Api:
    """The few HTTP calls the CLI makes, with errors turned into one-line messages."""

    def __init__(self, server: str, api_key: str | None):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.server = server.rstrip("/")
        self.http = httpx.Client(base_url=self.server, headers=headers, timeout=httpx.Timeout(30.0, read=None))

    def call(self, method: str, path: str, **kwargs) -> dict:
        try:
            reply = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise CliError(f"cannot reach tunereel at {self.server}: {error}") from None
        if reply.status_code >= 400:
            raise CliError(_problem(reply))
        return reply.json()

    def upload(self, path: Path, kind: str) -> dict:
        """POST /v1/uploads: the file streams from disk (httpx reads it in pieces)."""
        if not path.is_file():
            raise CliError(f"{path}: no such file")
        with path.open("rb") as file:
            # (connect, read, write, pool) as a tuple, not httpx.Timeout: the tests hand this client starlette's
            # TestClient, which is built on httpx2 since starlette 1.10 and accepts only its own Timeout or a tuple.
            return self.call("POST", "/v1/uploads", params={"kind": kind}, files={"file": (path.name, file)},
                             timeout=(30.0, None, None, 30.0))  # fmt: skip

    def events(self, job_id: str, last_event_id: str | None = None) -> Iterator[ServerEvent]:
        """One connection to the job's event stream; ends when the server ends it (or it breaks: httpx.HTTPError)."""
        headers = {"Accept": "text/event-stream"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        with self.http.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers) as reply:
            if reply.status_code >= 400:
                reply.read()
                raise CliError(_problem(reply))
            yield from parse_events(reply.iter_lines())

    def watch(self, job: dict) -> Iterator[dict]:
        """The job as it changes, until it ends: follows the event stream, and when the stream breaks off (or sends
        an `error` event) looks at the job and listens again with the last event id, as the UI does."""
        last_id, failures, reason = None, 0, ""
        while True:
            try:
                for event in self.events(job["id"], last_id):
                    last_id = event.id or last_id
                    if event.name == "error":
                        reason = str((event.data or {}).get("error") or "the event stream reported an error")
                        break
                    failures = 0
                    if isinstance(event.data, dict) and "state" in event.data:
                        job = event.data
                        yield job
                    if event.name == "end" or job["state"] in TERMINAL:
                        return
                else:
                    reason = "the event stream ended before the job did"
            except httpx.HTTPError as error:
                reason = f"lost the connection to {self.server}: {error}"
            failures += 1
            if failures > MAX_RECONNECTS:
                raise CliError(f"gave up following job {job['id']} after {MAX_RECONNECTS} reconnects: {reason}")
            time.sleep(RECONNECT_DELAY_S * failures)
            job = self.call("GET", f"/v1/jobs/{job['id']}")  # what happened meanwhile
            yield job
            if job["state"] in TERMINAL:
                return

    def download(self, job_id: str, path: Path) -> int:
        partial = path.with_name(f".{path.name}.part")
        try:
            with self.http.stream("GET", f"/v1/jobs/{job_id}/video") as reply:
                if reply.status_code >= 400:
                    reply.read()
                    raise CliError(_problem(reply))
                with partial.open("wb") as file:
                    for block in reply.iter_bytes():
                        file.write(block)
        except httpx.HTTPError as error:
            partial.unlink(missing_ok=True)
            raise CliError(f"download failed: {error}") from None
        except OSError as error:
            partial.unlink(missing_ok=True)
            raise CliError(f"cannot write {path}: {error.strerror}") from None
        partial.replace(path)
        return path.stat().st_size


@dataclass(frozen=True)
class ServerEvent:
    name: str
    data: object  # the parsed JSON of the event's data lines (None when it has none or is not JSON)
    id: str | None = None


def parse_events(lines: Iterable[str]) -> Iterator[ServerEvent]:
    """A text/event-stream body as events (the WHATWG rules the CLI needs: event, data, id; comments ignored)."""
    name, data, event_id = "message", [], None
    for line in lines:
        if not line:
            if data or name != "message":
                yield ServerEvent(name, _json_or_none("\n".join(data)), event_id)
            name, data, event_id = "message", [], None
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)
        elif field == "id":
            event_id = value


def _json_or_none(text: str) -> object:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def _problem(reply: httpx.Response) -> str:
    try:
        body = reply.json()
        return str(body.get("error") or body)
    except ValueError:
        return f"HTTP {reply.status_code}: {reply.text[:200]}"


def _body(args: argparse.Namespace) -> dict:
    if args.song is None and (args.genre is None or args.duration is None):
        raise CliError("--genre and --duration are required unless --song is given")
    body = {"video_prompt": args.prompt}
    optional = {
        "genre": args.genre, "duration": args.duration, "start": args.start, "normalize": args.normalize or None,
        "mood": args.mood, "tempo_bpm": args.tempo, "seed": args.seed, "width": args.width, "height": args.height,
        "fps": args.fps, "music_model": args.music_model, "video_model": args.video_model, "cuts": args.cuts,
        "cut_every_beats": args.cut_every_beats,
        "repaint_start": args.repaint[0] if args.repaint else None, "repaint_end": args.repaint[1] if args.repaint else None,
        "scenes": [scene["prompt"] for scene in args.scene] if args.scene else None,
        "instruments": [name.strip() for name in args.instruments.split(",") if name.strip()] if args.instruments else None,
        "vocal_language": args.vocal_language, "key": args.key, "time_signature": args.time_signature,
    }  # fmt: skip
    if args.lyrics is not None:
        try:
            optional["lyrics"] = args.lyrics.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise CliError(f"--lyrics: cannot read {args.lyrics}: {error}") from None
    body.update({key: value for key, value in optional.items() if value is not None})
    return body


def uploads(api: Api, args: argparse.Namespace) -> dict:
    """Upload --song, --melody, --image and each scene's --image first; the job names them by id."""
    named = {}
    for field, kind in (("song", "audio"), ("melody", "audio"), ("image", "image")):
        path = getattr(args, field)
        if path is not None:
            upload = api.upload(path, kind)
            named[field] = upload["id"]
            print(f"uploaded {path.name} ({upload['sha256'][:12]})", file=sys.stderr)
    if any("image" in scene for scene in args.scene or []):
        named["scenes"] = [{"prompt": scene["prompt"]} for scene in args.scene]
        for scene, sent in zip(args.scene, named["scenes"], strict=True):
            if "image" in scene:
                upload = api.upload(scene["image"], "image")
                sent["image"] = upload["id"]
                print(f"uploaded {scene['image'].name} for scene {scene['prompt']!r} ({upload['sha256'][:12]})",
                      file=sys.stderr)  # fmt: skip
    return named


def generate(api: Api, args: argparse.Namespace) -> int:
    job = api.call("POST", "/v1/jobs", json={**_body(args), **uploads(api, args)})
    job_id = str(job.get("id", ""))
    try:  # the server names the job; only a canonical UUID may become part of a local file name (no ../, no /)
        job["id"] = str(uuid.UUID(job_id))
    except ValueError:
        raise CliError(f"the server answered with a job id that is not a UUID: {job_id[:80]!r}") from None
    output = args.output or Path(f"tunereel-{job['id']}.mp4")
    print(f"job {job['id']} queued (seed {job['request']['seed']})", file=sys.stderr)
    try:
        final = _follow(api, job, quiet=args.no_progress)
    except KeyboardInterrupt:
        try:
            api.call("POST", f"/v1/jobs/{job['id']}/cancel")
            print(f"\ncanceled job {job['id']}", file=sys.stderr)
        except CliError as error:
            print(f"\nerror: could not cancel job {job['id']}: {error}", file=sys.stderr)
        return 130
    if final["state"] != "succeeded":
        raise CliError(f"job {job['id']} {final['state']}: {final.get('error') or 'the server gave no reason'}")
    size = api.download(job["id"], output)
    provenance = final.get("provenance") or {}
    print(f"{output}  ({size / 1e6:.1f} MB, seed {provenance.get('seed', job['request']['seed'])})")
    return 0


def _follow(api: Api, job: dict, *, quiet: bool) -> dict:
    """Watch the job until it ends; rich bars per stage (or one line per state)."""
    last = job
    if quiet or not sys.stderr.isatty():
        state = None
        for last in api.watch(job):
            if last["state"] != state:
                state = last["state"]
                print(state, file=sys.stderr)
        return last

    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description:>7}"), BarColumn(), TaskProgressColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=False) as bars:
        queue = bars.add_task("queue", total=1.0)
        tasks = {stage: bars.add_task(stage, total=1.0) for stage in STAGES}
        for last in api.watch(job):
            _show(bars, queue, tasks, last)
    return last


def _show(bars, queue, tasks: dict, job: dict) -> None:
    if job["state"] == "queued":
        bars.update(queue, description=f"queue #{job.get('queue_position', 0) + 1}")
    else:
        bars.update(queue, completed=1.0, description="queue")
    for stage, fraction in (job.get("stage_progress") or {}).items():
        if stage in tasks:
            bars.update(tasks[stage], completed=fraction)
    if job["state"] == "succeeded":
        for task in tasks.values():
            bars.update(task, completed=1.0)


def jobs_command(api: Api, args: argparse.Namespace) -> int:
    if args.action == "list":
        listing = api.call("GET", "/v1/jobs", params={"page_size": max(1, min(args.limit, 100))})
        for job in listing["jobs"]:
            request = job["request"]
            print(f"{job['id']}  {job['state']:<9}  {job['progress'] * 100:5.1f}%  {request['duration']:g}s  "
                  f"{request['genre']} / {request['video_prompt'][:40]}")  # fmt: skip
        return 0
    job = api.call("POST", f"/v1/jobs/{args.id}/cancel") if args.action == "cancel" else api.call("GET", f"/v1/jobs/{args.id}")
    print(json.dumps(job, indent=2) if args.action == "show" else f"{job['id']} {job['state']}")
    return 0


def _beats_per_cut(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a whole number of beats, got {text!r}") from None
    if not 1 <= value <= LIMITS.max_cut_every_beats:
        raise argparse.ArgumentTypeError(f"1 to {LIMITS.max_cut_every_beats} beats, got {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number of seconds, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"a finite number of seconds >= 0, got {text!r}")
    return value


def _repaint_problem(args: argparse.Namespace) -> str | None:
    """What the server would refuse about --repaint START END, said before anything is uploaded (None: nothing)."""
    if args.repaint is None:
        return None
    start, end = args.repaint
    if args.song is None:
        return "only with --song (the song whose range is re-made)"
    if args.genre is None:
        return "needs --genre (it describes the re-made range)"
    try:
        check_repaint_range(start, end, args.duration)  # the request model's own rule
    except ValueError as error:
        return str(error)
    return None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = _parser()
    args = parser.parse_args(argv)
    if getattr(args, "cut_every_beats", None) is not None and args.cuts != "beat":  # the server would refuse it
        parser.error(f"--cut-every-beats: only with --cuts beat (--cuts is {args.cuts or 'auto'})")
    if args.command == "generate" and (problem := _repaint_problem(args)):
        parser.error(f"--repaint: {problem}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "serve":
        from tunereel.launch import main as launch

        return launch([part for part in args.rest if part != "--"])
    if args.command == "models":
        from tunereel.catalog import run as models

        return models(args)
    api = Api(args.server, args.api_key)
    try:
        if args.command == "generate":
            return generate(api, args)
        return jobs_command(api, args)
    except CliError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except (httpx.HTTPError, OSError, ValueError, KeyError) as error:  # a reply the CLI did not expect: still one line
        print(f"error: {type(error).__name__}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
