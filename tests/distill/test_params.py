"""The validated number types of every command's float and int options (distill.core.params)."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from distill.core.errors import ConfigError
from distill.core.params import INT32_MAX, INT64_MAX, Count, FiniteFloat, count, finite_float


def _run(param_type: click.ParamType, value: str) -> tuple[int, str]:
    @click.command()
    @click.option("--x", type=param_type, required=True)
    def cmd(x: object) -> None:
        click.echo(repr(x))

    result = CliRunner().invoke(cmd, ["--x", value])
    return result.exit_code, result.output


@pytest.mark.parametrize("value", ["nan", "NaN", "-nan", "inf", "-inf", "Infinity", "1e999", "-1e400"])
def test_finite_float_refuses_what_is_not_finite(value: str) -> None:
    code, out = _run(FiniteFloat(), value)
    assert code == 2 and "finite" in out


@pytest.mark.parametrize(("value", "expected"), [("0", 0.0), ("2.5", 2.5), (" 1e-3 ", 1e-3), ("+.5", 0.5), ("7.", 7.0)])
def test_finite_float_takes_ascii_numbers(value: str, expected: float) -> None:
    assert _run(FiniteFloat(), value) == (0, f"{expected!r}\n")


@pytest.mark.parametrize("value", ["１.５", "١", "0x10", "1_000", "", "one", "1,5"])
def test_finite_float_refuses_other_spellings(value: str) -> None:
    code, out = _run(FiniteFloat(), value)
    assert code == 2 and "ASCII digits" in out


@pytest.mark.parametrize(("param_type", "value", "ok"), [
    (FiniteFloat(0, 1), "0", True), (FiniteFloat(0, 1), "1", True), (FiniteFloat(0, 1), "1.0001", False),
    (FiniteFloat(0, 1), "-0.1", False), (FiniteFloat(0, min_open=True), "0", False),
    (FiniteFloat(0, min_open=True), "1e-300", True), (FiniteFloat(max=10, max_open=True), "10", False),
    (Count(1), "0", False), (Count(1), "1", True), (Count(1, INT32_MAX), "2147483647", True),
    (Count(1, INT32_MAX), "99999999999", False), (Count(), str(INT64_MAX + 1), False), (Count(min=None), "-5", True),
])
def test_bounds(param_type: click.ParamType, value: str, ok: bool) -> None:
    code, out = _run(param_type, value)
    assert (code == 0) is ok, out
    if not ok:
        assert "range" in out


@pytest.mark.parametrize("value", ["１０", "٣", "1.5", "1e3", "0x10", "1_000", "", "ten", "True"])
def test_count_takes_ascii_integers_only(value: str) -> None:
    code, out = _run(Count(), value)
    assert code == 2 and "ASCII digits" in out


def test_python_values_pass_through_the_same_checks() -> None:
    """Defaults and config files arrive as Python values, not strings."""
    assert count("n", 3) == 3 and count("n", 4.0) == 4 and finite_float("w", 2) == 2.0
    for bad in (True, 2.5, "2.5", None):
        with pytest.raises(ConfigError, match="n must be an integer"):
            count("n", bad)
    with pytest.raises(ConfigError, match="w must be a finite number"):
        finite_float("w", float("nan"))
    with pytest.raises(ConfigError, match=r"w must be in the range 0 <= x <= 1, got 2"):
        finite_float("w", 2, 0, 1)
    with pytest.raises(ValueError, match="bounds must be finite"):
        FiniteFloat(0, float("inf"))


def test_help_shows_the_range() -> None:
    @click.command()
    @click.option("--b", type=FiniteFloat(0, 1), default=0.4)
    @click.option("--k", type=Count(1))
    def cmd(b: float, k: int) -> None: ...

    out = CliRunner().invoke(cmd, ["--help"]).output
    assert "--b 0<=FLOAT<=1" in out and "--k 1<=INTEGER" in out


def _number_options(command: click.Command, path: str = "") -> list[tuple[str, click.Parameter]]:
    if isinstance(command, click.Group):
        return [hit for name, sub in command.commands.items() for hit in _number_options(sub, f"{path} {name}")]
    return [(f"{path.strip()} {p.name}", p) for p in command.params
            if isinstance(p.type, click.types.IntParamType | click.types.FloatParamType)]


def test_every_number_option_of_retrieve_and_evaluate_is_validated() -> None:
    """click's int/float (and IntRange/FloatRange) accept nan, inf and non-ASCII digits; no option may use them."""
    from distill.cli import evaluate_cmd, retrieve

    unvalidated = _number_options(retrieve, "retrieve") + _number_options(evaluate_cmd, "evaluate")
    assert not unvalidated, [name for name, _ in unvalidated]
