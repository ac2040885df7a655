"""Method and task options are validated against the plugin's dataclass."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from harness.errors import UsageError
from harness.options import build_options, parse_pairs


@dataclass(frozen=True)
class Example:
    lr: float = 1e-3
    steps: int = 10
    layers: tuple[int, ...] = ()
    fusion: str = "sim"
    flag: bool = False
    tau: float | None = None


def test_pairs_are_read_as_yaml_scalars() -> None:
    pairs = parse_pairs(["lr=5e-4", "layers=[1, 2]", "flag=true", "fusion=opt"], "-o")
    assert build_options(Example, pairs, "method 'x'") == Example(
        lr=5e-4, layers=(1, 2), flag=True, fusion="opt")


def test_values_are_coerced_to_field_types() -> None:
    options = build_options(Example, {"lr": 1, "layers": "1,2,3", "tau": 0.5}, "method 'x'")
    assert options == Example(lr=1.0, layers=(1, 2, 3), tau=0.5)


@pytest.mark.parametrize("values, message", [
    ({"setps": 3}, "unknown option 'setps' \\(did you mean 'steps'\\?\\)"),
    ({"steps": 2.5}, "expected an integer"),
    ({"flag": "maybe"}, "expected true or false"),
    ({"lr": "fast"}, "expected a finite number"),
])
def test_bad_options_are_one_line_usage_errors(values, message) -> None:
    with pytest.raises(UsageError, match=message):
        build_options(Example, values, "method 'x'")


def test_malformed_pair() -> None:
    with pytest.raises(UsageError, match="KEY=VALUE"):
        parse_pairs(["novalue"], "-o")
