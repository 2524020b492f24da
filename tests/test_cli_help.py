"""Every command's ``--help`` as a user reads it: whole defaults, no type on flags, prose
wrapped as paragraphs, and the presets ``train`` accepts."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from scalelab.cli import app

WIDTH = 80  # a default terminal: narrow enough to wrap every long help text


def _command_paths() -> list[list[str]]:
    """The argument path to every command and group, the root included."""
    root = typer.main.get_command(app)
    paths: list[list[str]] = [[]]

    def walk(group: object, prefix: list[str]) -> None:
        for name, command in getattr(group, "commands", {}).items():
            paths.append([*prefix, name])
            walk(command, [*prefix, name])  # typer's own click: a group has commands

    walk(root, [])
    return paths


def _help(path: list[str]) -> str:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": str(WIDTH)})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("path", _command_paths(), ids=lambda p: " ".join(p) or "scalelab")
def test_help_has_no_bool_metavar_and_no_cut_text(path: list[str]) -> None:
    text = _help(path)
    assert "<bool>" not in text
    assert "…" not in text  # Rich's ellipsis for a word wider than its column


@pytest.mark.parametrize("path", _command_paths(), ids=lambda p: " ".join(p) or "scalelab")
def test_help_prose_is_wrapped_as_paragraphs(path: list[str]) -> None:
    """The description above the options fills its lines: a docstring's own line breaks
    would leave a short line in the middle of a paragraph (``fit), or``)."""
    prose = _help(path).split("\nOptions:")[0].split("\nArguments:")[0]
    for paragraph in prose.split("\n\n")[1:]:  # after the usage line
        lines = [line.strip() for line in paragraph.strip().splitlines()]
        for line in lines[:-1]:
            assert len(line) > WIDTH // 2, (line, paragraph)


def test_sweep_run_help_shows_the_default_storage_whole() -> None:
    assert "journal:<workspace>/optuna-journal.log" in _help(["sweep", "run"])


def test_train_help_lists_every_preset() -> None:
    from scalelab.model import PRESETS

    text = " ".join(_help(["train"]).split())
    for name in PRESETS:
        assert f" {name}," in text or f" {name} " in text, name
