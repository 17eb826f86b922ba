"""A safe arithmetic evaluator: a tokenizer and a recursive-descent parser, never ``eval``.

Grammar (``^`` and ``**`` are the same operator, right associative, binding tighter than a
unary minus on its left, so ``-2^2`` is -4 and ``2^-1`` is 0.5, as in Python and maths)::

    expr   := term (("+" | "-") term)*
    term   := unary (("*" | "/") unary)*
    unary  := ("+" | "-") unary | power
    power  := atom (("^" | "**") unary)?
    atom   := NUMBER | "(" expr ")"
    NUMBER := digits ["." digits] | "." digits

Why ``Decimal``: ``0.1 + 0.2`` is 0.3 for a person typing a formula, and a decimal context
puts hard limits on everything at once: 34 significant digits and exponents within
+-999, so no result can grow without bound, ``9**9**9`` overflows in microseconds instead
of computing a number with 370 million digits, and ``(-8)^(1/3)`` is refused as not real.
Inputs are bounded too: at most ``MAX_LENGTH`` characters, ``MAX_DEPTH`` nested
parentheses or signs (no RecursionError), and exponents of at most ``MAX_EXPONENT``.
"""

from __future__ import annotations

import decimal
import re
from dataclasses import dataclass
from decimal import Decimal

MAX_LENGTH = 256
MAX_DEPTH = 64
MAX_EXPONENT = Decimal(10_000)

_CONTEXT = decimal.Context(
    prec=34,
    rounding=decimal.ROUND_HALF_EVEN,
    Emax=999,
    Emin=-999,
    traps=[decimal.Overflow, decimal.DivisionByZero, decimal.InvalidOperation],
)
# ASCII only: "\d" would otherwise accept any Unicode digit, which Decimal would then parse.
_TOKEN = re.compile(r"\s*(?:(?P<number>\d+(?:\.\d+)?|\.\d+)|(?P<op>\*\*|[-+*/^()]))", re.ASCII)


class CalcError(ValueError):
    """A formula that cannot be evaluated; the message is safe to show to the user."""


class DivisionByZero(CalcError):
    pass


@dataclass(frozen=True)
class Token:
    kind: str  # "number", "op" or "end"
    text: str
    position: int


def tokenize(formula: str) -> list[Token]:
    """Split ``formula`` into tokens; raise CalcError naming the first bad character."""
    tokens: list[Token] = []
    position = 0
    while position < len(formula):
        if formula[position:].strip() == "":
            break
        match = _TOKEN.match(formula, position)
        if match is None:
            bad = formula[position:].lstrip()[:1]
            at = len(formula) - len(formula[position:].lstrip())
            raise CalcError(f"unexpected character {bad!r} at position {at + 1}")
        kind = "number" if match.group("number") is not None else "op"
        text = match.group(kind)
        tokens.append(Token(kind, text, match.start(kind)))
        position = match.end()
    tokens.append(Token("end", "", len(formula)))
    return tokens


class _Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.index = 0
        self.depth = 0

    @property
    def current(self) -> Token:
        return self.tokens[self.index]

    def take(self) -> Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def at(self, *ops: str) -> bool:
        return self.current.kind == "op" and self.current.text in ops

    def nested(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise CalcError(f"the formula nests deeper than {MAX_DEPTH} levels")

    def expr(self) -> Decimal:
        value = self.term()
        while self.at("+", "-"):
            op = self.take().text
            right = self.term()
            value = _CONTEXT.add(value, right) if op == "+" else _CONTEXT.subtract(value, right)
        return value

    def term(self) -> Decimal:
        value = self.unary()
        while self.at("*", "/"):
            op = self.take().text
            right = self.unary()
            if op == "*":
                value = _CONTEXT.multiply(value, right)
            elif right == 0:
                raise DivisionByZero("division by zero")
            else:
                value = _CONTEXT.divide(value, right)
        return value

    def unary(self) -> Decimal:
        if self.at("+", "-"):
            op = self.take().text
            self.nested()
            operand = self.unary()
            self.depth -= 1
            return _CONTEXT.minus(operand) if op == "-" else _CONTEXT.plus(operand)
        return self.power()

    def power(self) -> Decimal:
        base = self.atom()
        if self.at("^", "**"):
            self.take()
            self.nested()
            exponent = self.unary()
            self.depth -= 1
            return _power(base, exponent)
        return base

    def atom(self) -> Decimal:
        token = self.current
        if token.kind == "number":
            self.take()
            return _CONTEXT.create_decimal(token.text)
        if self.at("("):
            self.take()
            self.nested()
            value = self.expr()
            self.depth -= 1
            if not self.at(")"):
                raise CalcError(f"expected ')' at position {self.current.position + 1}")
            self.take()
            return value
        if token.kind == "end":
            raise CalcError("the formula ends too early")
        raise CalcError(f"unexpected {token.text!r} at position {token.position + 1}")


def _power(base: Decimal, exponent: Decimal) -> Decimal:
    if abs(exponent) > MAX_EXPONENT:
        raise CalcError(f"the exponent {exponent} is too large (limit {MAX_EXPONENT})")
    if base == 0 and exponent < 0:
        raise DivisionByZero("division by zero (zero to a negative power)")
    if base < 0 and exponent != exponent.to_integral_value():
        raise CalcError("a negative number to a fractional power is not a real number")
    return _CONTEXT.power(base, exponent)


def evaluate(formula: str) -> Decimal:
    """The value of ``formula``; raises CalcError (or DivisionByZero) with a useful message."""
    if len(formula) > MAX_LENGTH:
        raise CalcError(f"the formula is longer than {MAX_LENGTH} characters")
    if not formula.strip():
        raise CalcError("the formula is empty")
    parser = _Parser(tokenize(formula))
    try:
        value = parser.expr()
    except decimal.DivisionByZero as exc:
        raise DivisionByZero("division by zero") from exc
    except decimal.Overflow as exc:
        raise CalcError("the result is too large") from exc
    except decimal.InvalidOperation as exc:
        raise CalcError("the result is not a number") from exc
    if parser.current.kind != "end":
        raise CalcError(f"unexpected {parser.current.text!r} at position "
                        f"{parser.current.position + 1}")
    return value


def to_json_number(value: Decimal) -> int | float:
    """An int when the value is a whole number that fits the precision, else a float.

    JSON has one number type; a float keeps ``0.1 + 0.2`` as 0.3 (the Decimal was exact),
    and a value too large for a float is refused rather than sent as ``Infinity``.
    """
    if value == value.to_integral_value() and value.adjusted() < _CONTEXT.prec:
        return int(value)
    number = float(value)
    if number in (float("inf"), float("-inf")):
        raise CalcError("the result is too large to send as a JSON number")
    return number


def calculate(formula: str) -> int | float:
    """``evaluate`` then ``to_json_number``: what the service answers."""
    return to_json_number(evaluate(formula))
