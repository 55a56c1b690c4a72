"""`tunereel generate --lyrics FILE` sends the file's text as the request's lyrics; an unreadable file is a one-line
error and a non-zero exit, never a traceback."""

from __future__ import annotations

from tunereel import cli

BASE = ["--server", "http://127.0.0.1:9", "generate", "--genre", "pop", "--duration", "3", "--prompt", "a sunset"]


def test_lyrics_file_becomes_the_lyrics_field(tmp_path, monkeypatch):
    sent = []

    def call(self, method, path, **kwargs):
        sent.append(kwargs["json"])
        raise cli.CliError("stop here")

    monkeypatch.setattr(cli.Api, "call", call)
    song = tmp_path / "song.txt"
    song.write_text("[verse]\nthe sun goes down\n", encoding="utf-8")
    assert cli.main([*BASE, "--lyrics", str(song), "--vocal-language", "en", "--key", "A minor"]) == 1
    (body,) = sent
    assert body["lyrics"] == "[verse]\nthe sun goes down\n"
    assert (body["vocal_language"], body["key"]) == ("en", "A minor") and "time_signature" not in body


def test_unreadable_lyrics_file_is_one_line(tmp_path, capsys):
    assert cli.main([*BASE, "--lyrics", str(tmp_path / "missing.txt")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --lyrics: cannot read") and "\n" not in err
