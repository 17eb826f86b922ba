"""The calc parser and service: arithmetic, errors, and hostile input that must fail fast."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from examples.calc.app import make_app
from examples.calc.parser import (
    MAX_DEPTH,
    MAX_LENGTH,
    CalcError,
    DivisionByZero,
    calculate,
    evaluate,
    tokenize,
)
from examples.common.auth import BasicAuth, Credentials
from examples.common.web import Request

AUTH = BasicAuth(Credentials("admin", "s3cret"))
HEADERS = {"Authorization": AUTH.credentials.header()}


@pytest.mark.parametrize(("formula", "value"), [
    ("(2+2)*3", 12),
    ("1 + 2 * 3", 7),
    ("(1 + 2) * 3", 9),
    ("10 - 4 - 3", 3),           # left associative
    ("64 / 4 / 2", 8),
    ("7/2", 3.5),
    ("0.1 + 0.2", 0.3),          # decimal, not binary floating point
    (".5 + 1.5", 2),
    ("2^10", 1024),
    ("2**10", 1024),
    ("2^3^2", 512),              # right associative
    ("2**3**2", 512),
    ("-2^2", -4),                # the power binds tighter than unary minus
    ("(-2)^2", 4),
    ("2^-1", 0.5),
    ("-(-3)", 3),
    ("--3", 3),
    ("+4", 4),
    ("3 * -2", -6),
    ("2^0.5", 1.4142135623730951),
    ("1/3", 0.3333333333333333),
    ("2/3*3", 2),
    ("  42  ", 42),
    ("0.000", 0),
    ("-0", 0),
    ("12345678901234567890", 12345678901234567890),
    ("10^20", 10**20),
    ("2^200", float(2**200)),    # more digits than the precision: a float
])
def test_values(formula: str, value: float | int) -> None:
    result = calculate(formula)
    assert result == value
    assert type(result) is type(value)


def test_exact_decimal_arithmetic() -> None:
    assert evaluate("1.10 * 3") == Decimal("3.30")
    assert evaluate("(1/7)*7") == 1


@pytest.mark.parametrize(("formula", "message"), [
    ("", "empty"),
    ("   ", "empty"),
    ("1 +", "ends too early"),
    ("(1 + 2", "expected ')'"),
    ("1 + 2)", "unexpected ')'"),
    ("2 3", "unexpected '3'"),
    ("2(3)", "unexpected '('"),
    ("()", "unexpected ')'"),
    ("1 ** ** 2", "unexpected '\\*\\*'"),
    ("1e3", "unexpected character 'e'"),
    ("1.", "unexpected character '.'"),
    ("abs(1)", "unexpected character 'a'"),
    ("__import__('os')", "unexpected character '_'"),
    ("1; 2", "unexpected character ';'"),
    ("1 % 2", "unexpected character '%'"),
    ("\u0661+1", "unexpected character"),  # an Arabic-Indic digit: ASCII digits only
    ("NaN", "unexpected character 'N'"),
    ("inf", "unexpected character 'i'"),
])
def test_syntax_errors(formula: str, message: str) -> None:
    with pytest.raises(CalcError, match=message.replace("(", r"\(").replace(")", r"\)")):
        calculate(formula)


@pytest.mark.parametrize("formula", ["1/0", "1/(2-2)", "0^-1", "5/0.0", "(1/0)+1"])
def test_division_by_zero(formula: str) -> None:
    with pytest.raises(DivisionByZero):
        calculate(formula)


@pytest.mark.parametrize(("formula", "message"), [
    ("9**9**9", "exponent .* too large"),           # would have 370 million digits
    ("9^9^9^9", "too large"),
    ("2^100000", "exponent .* too large"),
    ("10^999 * 10", "too large"),
    ("9^1000 * 9^1000", "too large"),
    ("(10^500)^(10^4)", "too large"),
    ("10^400", "too large to send"),                 # a Decimal, but not a JSON float
    ("(-8)^(1/3)", "not a real number"),
    ("1" * (MAX_LENGTH + 1), "longer than"),
    ("(" * 100 + "1" + ")" * 100, "nests deeper"),
    ("-" * (MAX_DEPTH + 1) + "1", "nests deeper"),
    ("2" + "^2" * 100, "nests deeper|too large"),
])
def test_hostile_input_fails_fast(formula: str, message: str) -> None:
    started = time.perf_counter()
    with pytest.raises(CalcError, match=message):
        calculate(formula)
    assert time.perf_counter() - started < 0.5


def test_longest_allowed_formula_is_fast() -> None:
    unit = "9^999/9^998+"
    count = (MAX_LENGTH - 1) // len(unit)
    formula = unit * count + "1"
    assert len(formula) <= MAX_LENGTH
    started = time.perf_counter()
    assert calculate(formula) == 9 * count + 1
    assert time.perf_counter() - started < 0.5


def test_tokens_carry_positions() -> None:
    assert [(t.kind, t.text, t.position) for t in tokenize(" 1 ** 2")] == [
        ("number", "1", 1), ("op", "**", 3), ("number", "2", 6), ("end", "", 7)]


# --- the service -------------------------------------------------------------------------


def get(path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, object]]:
    app = make_app(AUTH, container_id="c0ffee")
    response = app.handle(Request("GET", path, headers=HEADERS if headers is None else headers))
    return response.status, response.json()


def test_service_answers_a_url_encoded_formula() -> None:
    assert get("/calc/%282%2B2%29*3") == (
        200, {"value": 12, "formula": "(2+2)*3", "container_id": "c0ffee"})
    # The reference's curl example sends the formula unencoded; "+" in a path is a plus.
    assert get("/calc/(2+2)*3")[1]["value"] == 12
    # "/" inside the formula is division, whether encoded or not.
    assert get("/calc/6/3")[1]["value"] == 2
    assert get("/calc/6%2F4")[1]["value"] == 1.5


@pytest.mark.parametrize(("path", "fragment"), [
    ("/calc/1%2F0", "division by zero"),
    ("/calc/9**9**9", "too large"),
    ("/calc/", "empty"),
    ("/calc/%FF", "percent-encoded UTF-8"),
    ("/calc/" + "1" * 300, "longer than"),
])
def test_service_errors_are_400_json(path: str, fragment: str) -> None:
    status, body = get(path)
    assert status == 400
    assert fragment in str(body["error"])


def test_service_requires_auth_but_health_does_not() -> None:
    status, body = get("/calc/1+1", headers={})
    assert (status, body) == (401, {"error": "authentication required"})
    assert get("/health", headers={}) == (200, {"status": "ok", "service": "calc"})
