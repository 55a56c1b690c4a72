"""`tunereel generate --song FILE --repaint START END`: the range reaches the job API as repaint_start / repaint_end
after the song is uploaded; a bad range is one line on stderr and exit 2, before anything is uploaded."""

from __future__ import annotations

import pytest

from tunereel import cli

SONG = ["generate", "--prompt", "x", "--genre", "pop", "--song", "take1.wav"]


def sent_calls(monkeypatch, capsys, argv: list[str]) -> list[tuple]:
    calls = []

    def upload(self, path, kind):
        calls.append(("upload", path.name, kind))
        return {"id": "id-of-take1", "sha256": "0" * 64}

    def call(self, method, path, **kwargs):
        calls.append((method, path, kwargs.get("json")))
        raise cli.CliError("stop here")

    monkeypatch.setattr(cli.Api, "upload", upload)
    monkeypatch.setattr(cli.Api, "call", call)
    assert cli.main(argv) == 1
    assert "stop here" in capsys.readouterr().err
    return calls


def test_repaint_sends_the_range_with_the_uploaded_song(monkeypatch, capsys):
    calls = sent_calls(monkeypatch, capsys, [*SONG, "--start", "30", "--repaint", "12.5", "20"])
    assert calls[0] == ("upload", "take1.wav", "audio")
    method, path, body = calls[1]
    assert (method, path) == ("POST", "/v1/jobs")
    assert (body["song"], body["start"], body["genre"]) == ("id-of-take1", 30.0, "pop")
    assert (body["repaint_start"], body["repaint_end"]) == (12.5, 20.0)
    assert isinstance(body["repaint_start"], float)  # "12.5" the number, not the text


def test_without_repaint_no_range_is_sent(monkeypatch, capsys):
    (_, (_, _, body)) = sent_calls(monkeypatch, capsys, SONG)
    assert "repaint_start" not in body and "repaint_end" not in body


def test_a_range_from_zero_within_the_duration_is_accepted(monkeypatch, capsys):
    (_, (_, _, body)) = sent_calls(monkeypatch, capsys, [*SONG, "--duration", "8", "--repaint", "0", "8"])
    assert (body["repaint_start"], body["repaint_end"], body["duration"]) == (0.0, 8.0, 8.0)


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        ([*SONG, "--repaint", "ten", "20"], "a number of seconds, got 'ten'"),
        ([*SONG, "--repaint", "10", "inf"], "a finite number of seconds >= 0, got 'inf'"),
        ([*SONG, "--repaint", "-1", "20"], "a finite number of seconds >= 0, got '-1'"),
        ([*SONG, "--repaint", "10"], "expected 2 arguments"),
        ([*SONG, "--repaint", "20", "10"], "repaint_end: must be after repaint_start (20 s; got 10)"),
        ([*SONG, "--repaint", "5", "5"], "repaint_end: must be after repaint_start (5 s; got 5)"),
        ([*SONG, "--duration", "8", "--repaint", "5", "9"], "repaint_end: must be within the video's music (duration 8 s; got 9)"),
        (["generate", "--prompt", "x", "--genre", "pop", "--duration", "8", "--repaint", "1", "2"], "only with --song"),
        (["generate", "--prompt", "x", "--song", "take1.wav", "--repaint", "1", "2"], "needs --genre"),
    ],
)
def test_a_bad_repaint_is_one_line_and_exit_2(monkeypatch, capsys, argv, words):
    uploaded = []
    monkeypatch.setattr(cli.Api, "upload", lambda self, path, kind: uploaded.append(path))
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert "--repaint" in err and words in err and len(err.splitlines()) == 1, err
    assert "Traceback" not in captured.err and uploaded == []  # refused before the song is uploaded
