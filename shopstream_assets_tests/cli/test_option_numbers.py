"""Every number a command takes is finite, and not negative where that has no meaning.

The options are read from the command tree itself, so a new command or option is covered
the day it is added. Broken on purpose: without the ``finite`` callback on ``produce
--rate``, ``--rate inf`` runs a producer whose event times mean nothing, and this fails.
"""

from __future__ import annotations

import typing
from collections.abc import Iterator

import pytest
import typer
from typer.testing import CliRunner

from shopstream_cli.cli import app

# Options where a negative number means something.
NEGATIVE_ALLOWED = frozenset({"--seed"})
NUMBER_TYPES = {float: "float", int: "int"}


def _number_kind(param: object) -> str | None:
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    # ``float | None`` counts as float.
    candidates = typing.get_args(annotation) or (annotation,)
    return next((NUMBER_TYPES[kind] for kind in candidates if kind in NUMBER_TYPES), None)


def numeric_options() -> Iterator[tuple[tuple[str, ...], str, str]]:
    """(command words, option, "float" or "int") for every numeric option of every command."""
    root = typer.main.get_command(app)

    def walk(command: object, words: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], str, str]]:
        subcommands = getattr(command, "commands", None)
        if subcommands:
            for name, sub in subcommands.items():
                yield from walk(sub, (*words, name))
            return
        for param in getattr(command, "params", []):
            kind = _number_kind(param)
            if kind and param.opts[0].startswith("--"):
                yield words, param.opts[0], kind

    yield from walk(root, ())


OPTIONS = sorted(numeric_options())


def test_the_tree_has_the_options_we_know_of() -> None:
    """A walk that found nothing would make the checks below pass on nothing."""
    found = {(words, option) for words, option, _ in OPTIONS}
    assert (("produce",), "--rate") in found
    assert (("bench", "ingest"), "--latency-rate") in found
    assert (("stream",), "--trigger") in found
    assert len(OPTIONS) >= 20, OPTIONS


def _refused(words: tuple[str, ...], option: str, value: str) -> str:
    result = CliRunner().invoke(app, [*words, f"{option}={value}"])
    assert result.exit_code == 2, (words, option, value, result.exit_code, result.output[-1500:])
    assert option in result.output, (words, option, value, result.output[-1500:])
    return result.output


def _cases(kinds: set[str], skip: frozenset[str] = frozenset()) -> list[object]:
    return [
        pytest.param(words, option, id=" ".join((*words, option)))
        for words, option, kind in OPTIONS
        if kind in kinds and option not in skip
    ]


@pytest.mark.parametrize(("words", "option"), _cases({"float"}))
@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e400"])
def test_a_float_option_refuses_what_is_not_finite(words: tuple[str, ...], option: str, value: str) -> None:
    _refused(words, option, value)


@pytest.mark.parametrize(("words", "option"), _cases({"float", "int"}, NEGATIVE_ALLOWED))
def test_a_number_option_refuses_a_negative(words: tuple[str, ...], option: str) -> None:
    _refused(words, option, "-1")
