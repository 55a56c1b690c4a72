"""`tunereel generate --scene … --cuts … --cut-every-beats …`: what reaches the job API, and a bad value as one line
and exit 2."""

from __future__ import annotations

import pytest

from tunereel import cli


def test_repeated_scenes_and_cuts_reach_the_request(monkeypatch, capsys):
    sent = {}

    def call(self, method, path, **kwargs):
        sent.update(kwargs.get("json") or {})
        raise cli.CliError("stop here")

    monkeypatch.setattr(cli.Api, "call", call)
    code = cli.main(["generate", "--genre", "pop", "--duration", "8", "--prompt", "x", "--scene", "a red room",
                     "--scene", "a blue sea", "--cuts", "bar"])  # fmt: skip
    assert code == 1 and "stop here" in capsys.readouterr().err
    assert sent["scenes"] == ["a red room", "a blue sea"] and sent["cuts"] == "bar"


def test_an_unknown_cuts_value_is_one_line_and_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["generate", "--genre", "pop", "--duration", "8", "--prompt", "x", "--cuts", "often"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "--cuts" in err and "often" in err and len(err.splitlines()) == 1


def sent_body(monkeypatch, capsys, argv: list[str]) -> dict:
    sent = {}

    def call(self, method, path, **kwargs):
        sent.update(kwargs.get("json") or {})
        raise cli.CliError("stop here")

    monkeypatch.setattr(cli.Api, "call", call)
    assert cli.main(["generate", "--genre", "pop", "--duration", "8", "--prompt", "x", *argv]) == 1
    assert "stop here" in capsys.readouterr().err
    return sent


def test_cut_every_beats_reaches_the_request_with_beat_cuts(monkeypatch, capsys):
    sent = sent_body(monkeypatch, capsys, ["--cuts", "beat", "--cut-every-beats", "4"])
    assert sent["cuts"] == "beat" and sent["cut_every_beats"] == 4
    assert "cut_every_beats" not in sent_body(monkeypatch, capsys, ["--cuts", "beat"])  # the server's default, 1


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--cuts", "beat", "--cut-every-beats", "0"], "1 to 32 beats, got 0"),
        (["--cuts", "beat", "--cut-every-beats", "33"], "1 to 32 beats, got 33"),
        (["--cuts", "beat", "--cut-every-beats", "2.5"], "whole number of beats, got '2.5'"),
        (["--cuts", "bar", "--cut-every-beats", "2"], "only with --cuts beat (--cuts is bar)"),
        (["--cut-every-beats", "2"], "only with --cuts beat (--cuts is auto)"),
    ],
)
def test_a_bad_cut_every_beats_is_one_line_and_exit_2(capsys, argv, words):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["generate", "--genre", "pop", "--duration", "8", "--prompt", "x", *argv])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "--cut-every-beats" in err and words in err and len(err.splitlines()) == 1, err


def test_an_image_pairs_with_the_scene_before_it_and_is_uploaded_first(monkeypatch, capsys, tmp_path):
    calls = []

    def upload(self, path, kind):
        calls.append(("upload", path.name, kind))
        return {"id": f"id-of-{path.stem}", "sha256": "0" * 64}

    def call(self, method, path, **kwargs):
        calls.append((method, path, kwargs.get("json")))
        raise cli.CliError("stop here")

    monkeypatch.setattr(cli.Api, "upload", upload)
    monkeypatch.setattr(cli.Api, "call", call)
    code = cli.main(["generate", "--genre", "pop", "--duration", "8", "--prompt", "x", "--image", "all.png",
                     "--scene", "a face", "--image", "face.png", "--scene", "a room", "--scene", "a sea",
                     "--image", "sea.webp"])  # fmt: skip
    assert code == 1 and "stop here" in capsys.readouterr().err
    assert calls[:3] == [("upload", "all.png", "image"), ("upload", "face.png", "image"), ("upload", "sea.webp", "image")]
    method, path, body = calls[3]
    assert (method, path, body["image"]) == ("POST", "/v1/jobs", "id-of-all")
    assert body["scenes"] == [{"prompt": "a face", "image": "id-of-face"}, {"prompt": "a room"},
                              {"prompt": "a sea", "image": "id-of-sea"}]  # fmt: skip


def test_two_images_for_one_scene_is_one_line_and_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["generate", "--genre", "pop", "--duration", "8", "--prompt", "x", "--scene", "a face",
                  "--image", "a.png", "--image", "b.png"])  # fmt: skip
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "--image" in err and "scene 1" in err and len(err.splitlines()) == 1
