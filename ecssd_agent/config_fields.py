"""Declaring settings once: a dataclass field carries its help, flag, variable and default.

Every entry point of the system (the agent and DNS server CLIs, both Lambdas) configures
itself from a frozen dataclass of such fields, so each setting has exactly one name, one
environment variable and one default, and bad values are reported the same way everywhere:
naming the flag or variable that held them.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, Field, field, fields
from typing import Any, TypeVar

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f", ""}


DEFAULT_DOMAIN = "servicediscovery.internal"


def env_name(attribute: str) -> str:
    """The ``ECSSD_`` variable of a setting (the agent, ecssd-dns and ecssd-writer share the prefix)."""
    return "ECSSD_" + attribute.upper()


class SettingsError(ValueError):
    """A setting with a value that cannot be used; the message names the flag or variable."""


def setting(default: Any, help: str, *, env: str = "", choices: Sequence[str] = (),
            legacy: Sequence[str] = (), metavar: str | None = None) -> Any:
    """A dataclass field that is a setting.

    ``env`` names its environment variable where the convention (``ECSSD_<NAME>`` for the
    CLIs) does not apply, as for the Lambdas' names; ``legacy`` adds flag spellings that
    existing service files use (``-sync``).
    """
    return field(default=default, metadata={
        "help": help, "env": env, "choices": tuple(choices), "legacy": tuple(legacy),
        "metavar": metavar,
    })


def parse_value(kind: str, raw: Any, source: str) -> Any:
    """Convert ``raw`` to the field type named ``kind``; SettingsError names ``source``."""
    if not isinstance(raw, str):
        return raw
    text = raw.strip()
    try:
        if kind == "bool":
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
            raise ValueError("not a boolean (true/false)")
        if kind == "int":
            return int(text)
        if kind == "float":
            number = float(text)
            if not math.isfinite(number):
                raise ValueError("not a finite number")
            return number
        if kind == "tuple[str, ...]":
            return tuple(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    except ValueError as exc:
        raise SettingsError(f"{source}: {raw!r} is {_reason(kind, exc)}") from None
    return text


def _reason(kind: str, exc: ValueError) -> str:
    message = str(exc)
    if message.startswith("not a"):
        return message
    return f"not a valid {kind}"


def _check_choice(f: Field[Any], value: Any, source: str) -> None:
    choices = f.metadata.get("choices", ())
    if choices and value not in choices:
        raise SettingsError(f"{source}: {value!r} is not one of {', '.join(choices)}")


def flag_of(f: Field[Any]) -> str:
    return "--" + f.name.replace("_", "-")


def from_env(cls: type[T], environ: Mapping[str, str],
             env_name: Callable[[str], str] | None = None,
             overrides: Mapping[str, Any] | None = None) -> T:
    """Build ``cls`` from ``overrides`` (already parsed, e.g. flags) over ``environ``.

    A field's variable is its ``env`` metadata, else ``env_name(field name)``. An empty
    variable counts as unset, except for lists, where it means "none".
    """
    values: dict[str, Any] = {}
    for f in fields(cls):  # type: ignore[arg-type]
        kind = str(f.type)
        given = (overrides or {}).get(f.name)
        if given is not None:
            source = "DOMAIN" if f.name == "domain" and not f.metadata.get("env") else flag_of(f)
            values[f.name] = parse_value(kind, given, source)
            _check_choice(f, values[f.name], source)
            continue
        name = f.metadata.get("env") or (env_name(f.name) if env_name else f.name.upper())
        raw = environ.get(name)
        if raw is None or (raw.strip() == "" and kind != "tuple[str, ...]"):
            continue
        values[f.name] = parse_value(kind, raw, name)
        _check_choice(f, values[f.name], name)
    return cls(**values)


def build_parser(cls: type[Any], env_name: Callable[[str], str], default_domain: str,
                 **kwargs: Any) -> argparse.ArgumentParser:
    """An argparse parser with one option per field (``domain`` is the positional DOMAIN).

    Defaults stay None here so :func:`from_env` can tell a flag from an absent one; the help
    shows the real default and the variable.
    """
    parser = argparse.ArgumentParser(allow_abbrev=False, **kwargs)
    for f in fields(cls):
        meta = f.metadata
        if f.name == "domain":
            parser.add_argument("domain", nargs="?", default=None,
                                help=f"{meta['help']} (default {default_domain}; env "
                                     f"{env_name('domain')})")
            continue
        default = f.default if f.default is not MISSING else None
        helptext = f"{meta['help']} (env {env_name(f.name)}; default {default!r})"
        flags = [flag_of(f), *meta.get("legacy", ())]
        if str(f.type) == "bool" and default is True:  # on by default: --no-<flag> turns it off
            parser.add_argument(*flags, dest=f.name, action=argparse.BooleanOptionalAction,
                                default=None, help=helptext)
        elif str(f.type) == "bool":
            parser.add_argument(*flags, dest=f.name, action="store_true", default=None,
                                help=helptext)
        else:
            parser.add_argument(*flags, dest=f.name, default=None, help=helptext,
                                choices=meta.get("choices") or None, metavar=meta.get("metavar"))
    return parser


def load_cli(cls: type[T], parser: argparse.ArgumentParser, argv: Sequence[str] | None,
             environ: Mapping[str, str], env_name: Callable[[str], str]) -> T:
    """Flags over variables over defaults."""
    return from_env(cls, environ, env_name, overrides=vars(parser.parse_args(argv)))
