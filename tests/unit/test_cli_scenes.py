"""`tunereel generate --scene … --cuts …`: what reaches the job API, and a bad value as one line and exit 2."""

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
