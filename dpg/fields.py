"""A config field's type and allowed range, checked the same way for YAML and for dataclasses built in Python.

Types come from the annotations (`build` reads a mapping into a dataclass, `coerce` checks one value). A numeric
field's range is declared beside it, with the reason, by `bound`:

    lr: float = bound(1e-3, "> 0", "the inner learning rate")

and `check_bounds` checks every declared range of a config (sections included), so an error reads
`inner_sft.lr: must be > 0 (the inner learning rate), got -0.01`. Torch-free; every error is a ConfigError of one
line naming the key and the value.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import re
import types
import typing
from typing import Any, Literal

from dpg.errors import ConfigError

# A rule is a comparison with one number ("> 0", ">= 1") or an interval ("[0, 1)", "(0, 1]", "[0, inf]"). Its ends
# are numbers, `inf`, or a power such as 2**32. An open end at inf refuses inf: only "[0, inf]" admits it.
COMPARISON = re.compile(r"(>=|>|<=|<) (\S+)")
INTERVAL = re.compile(r"([\[(])(\S+), (\S+)([\])])")


class Bound:
    """The range a numeric field must lie in, and why (what the number means, what its edge values do)."""

    def __init__(self, rule: str, why: str):
        self.rule, self.why = rule, why
        if m := COMPARISON.fullmatch(rule):
            op, x = m.group(1), _number(m.group(2))
            ends = (x, op == ">=", math.inf, False) if op.startswith(">") else (-math.inf, False, x, op == "<=")
            self.shown = rule
        elif m := INTERVAL.fullmatch(rule):
            ends = _number(m.group(2)), m.group(1) == "[", _number(m.group(3)), m.group(4) == "]"
            self.shown = f"in {rule}"
        else:
            raise ValueError(f"bound: cannot read the rule {rule!r}; write e.g. '> 0', '>= 1' or '[0, 1)'")
        self.low, self.low_in, self.high, self.high_in = ends

    def admits(self, value: float) -> bool:
        return ((self.low < value or self.low_in and value == self.low)
                and (value < self.high or self.high_in and value == self.high))

    def check(self, key: str, value) -> None:
        """Refuse `value` unless the rule admits it (None, strings and booleans are the other members of a field's
        type, e.g. `null` or "auto"; lists are checked element by element)."""
        if isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                self.check(f"{key}[{i}]", v)
            return
        if value is None or isinstance(value, (str, bool)) or self.admits(value):
            return
        admits_infinity = self.high_in and self.high == math.inf or self.low_in and self.low == -math.inf
        finite = "" if math.isfinite(value) or admits_infinity else "a finite number "
        raise ConfigError(f"{key}: must be {finite}{self.shown} ({self.why}), got {value}")


def bound(default, rule: str, why: str) -> Any:
    """A dataclass field with default `default` whose values must satisfy `rule`, for the reason `why`."""
    return dataclasses.field(default=default, metadata={"bound": Bound(rule, why)})


def check_bounds(obj, prefix: str = "") -> None:
    """Every declared bound of dataclass `obj` and of its sections, keys named `prefix` + the dotted field path."""
    for f in dataclasses.fields(obj):
        value, key = getattr(obj, f.name), prefix + f.name
        if dataclasses.is_dataclass(value):
            check_bounds(value, key + ".")
        elif "bound" in f.metadata:
            f.metadata["bound"].check(key, value)


def check_fields(obj, prefix: str) -> None:
    """A dataclass built in Python: each field read by its type as `build` reads YAML (so the same values are
    refused with the same messages), then its bound."""
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        setattr(obj, f.name, coerce(hints[f.name], getattr(obj, f.name), prefix + f.name))
    check_bounds(obj, prefix)


def build(cls, raw: Any, prefix: str):
    """Construct dataclass `cls` from a mapping, checking every key and type."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {raw!r}")
    hints = _hints(cls)
    names = sorted(f.name for f in dataclasses.fields(cls))
    unknown = sorted(set(raw) - set(names), key=str)
    if unknown:
        key = str(unknown[0])
        close = difflib.get_close_matches(key, names, n=1)
        guess = f": did you mean '{prefix}{close[0]}'?" if close else ""
        raise ConfigError(f"unknown key {prefix}{key}{guess} (known in {prefix.rstrip('.') or 'the top level'}: "
                          f"{', '.join(names)})")
    return cls(**{k: coerce(hints[k], v, f"{prefix}{k}") for k, v in raw.items()})


def coerce(tp, value, key):
    """`value` read as type `tp` (a number from YAML's "1e-3" string, a tuple from a list, sections built), or a
    ConfigError naming `key`."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, key + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce(a, value, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: invalid value {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: invalid value {value!r}; choose one of {list(args)}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{key}: expected a list of {len(args)} values, got {value!r}")
        return tuple(coerce(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # PyYAML (YAML 1.1) reads 1e-3 without a dot as a string
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{key}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return value
    raise ConfigError(f"{key}: cannot read a value of type {tp} from {value!r}")


@functools.cache
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _number(text: str) -> float:
    if text in ("inf", "-inf"):
        return float(text)
    base, power, exponent = text.partition("**")
    return int(base) ** int(exponent) if power else int(text) if re.fullmatch(r"-?\d+", text) else float(text)
