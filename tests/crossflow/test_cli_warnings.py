"""Python warnings under the ``crossflow`` command print as one line each, not hidden and without source lines."""

from __future__ import annotations

import warnings

from crossflow import cli


def test_warnings_print_as_one_line(monkeypatch, capsys):
    def command(args):
        warnings.warn("embedding cache index is unreadable;\n  recomputing its prompts", UserWarning)
        return {"ok": True}

    monkeypatch.setitem(cli.COMMANDS, "params", command)
    assert cli.main(["params", "c.yaml"]) == 0
    err = capsys.readouterr().err
    assert err == "crossflow: warning: embedding cache index is unreadable; recomputing its prompts\n"
    assert warnings.showwarning is not cli._warning_line  # the hook ends with the command
