"""The type checking behind every setting: a `Range` declared with a number's type, `from_dict`,
which builds a settings dataclass from plain data and refuses unknown keys and values outside their
type, `Literal` choices or range, in one line, and `fields_of`, which lends one dataclass's field
declarations (type, default, documentation) to another.

`from_dict` is the only checker: the Python API (`load_study`, `Study.validate`) and the command
line (flare/cli.py: the study file before jsonargparse reads it, the parsed study after, and
`check_setting` for a flag jsonargparse refused) all call it. jsonargparse's own validation of the
same dataclasses (`ArgumentParser.add_class_arguments` + `parse_object`, version 4.53) cannot
replace it: it ignores `Range` metadata in `Annotated` (adapter.r 2**40 and
stage1.gradient_accumulation 0 pass), accepts nan for a float, accepts a list where a nested
section belongs, and words a refusal as several lines ('Parser key "methods":' then "Expected a
typing.Literal[...]. Got value: flarex") without the list index, the choices as plain words or the
hint about YAML booleans such as a bare `no`.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from flare.errors import FlareError, brief


@dataclass(frozen=True)
class Range:
    """The interval a number setting must lie in, declared with its type (`Annotated[int, Range(1)]`):
    `flare --help` shows it, and `from_dict` (the Python API and the CLI alike) enforces it."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # the bound itself is excluded
    high_open: bool = False

    def check(self, value: float, name: str) -> None:
        too_low = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        too_high = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        if too_low or too_high:
            raise FlareError(f"{name}: {value!r} is out of range (must be {self!r})")

    def __repr__(self) -> str:
        low = None if self.low is None else f"{'>' if self.low_open else '>='} {_number(self.low)}"
        high = None if self.high is None else f"{'<' if self.high_open else '<='} {_number(self.high)}"
        return " and ".join(bound for bound in (low, high) if bound)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def from_dict(cls: type, values: Any, where: str = "") -> Any:
    """Build a (nested) settings dataclass from plain data, rejecting unknown keys and values that
    break the declared type, `Literal` choices or `Range`."""
    if not isinstance(values, dict):
        raise FlareError(f"{where or cls.__name__}: expected a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls, include_extras=True)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known, key=str)
    if unknown:
        raise FlareError(
            f"{where + '.' if where else ''}{brief(unknown[0])}: unknown setting (known: {', '.join(sorted(known))})"
        )
    built = {}
    for key, value in values.items():
        name = f"{where}.{key}" if where else key
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            built[key] = from_dict(hint, value, name)
        else:
            built[key] = check_type(value, hint, name)
    return cls(**built)


def check_type(value: Any, hint: Any, name: str) -> Any:
    """`value` checked against a type hint (with `Annotated` ranges and `Literal` choices)."""
    origin = typing.get_origin(hint)
    if origin is Annotated:
        base, *constraints = typing.get_args(hint)
        value = check_type(value, base, name)
        for constraint in constraints:
            if isinstance(constraint, Range):
                constraint.check(value, name)
        return value
    if origin is Literal:
        choices = typing.get_args(hint)
        if any(value == choice and type(value) is type(choice) for choice in choices):
            return value
        hint_bool = " (quote words like 'no' that YAML reads as booleans)" if isinstance(value, bool) else ""
        raise FlareError(f"{name}: {brief(value)} is not one of {', '.join(map(str, choices))}{hint_bool}")
    options = typing.get_args(hint) if origin in (typing.Union, types.UnionType) else (hint,)
    for option in options:
        base = typing.get_origin(option) or option
        if option is type(None) and value is None:
            return value
        if base is Literal:  # Literal[...] | None
            if value in typing.get_args(option):
                return check_type(value, option, name)
            continue
        if base is str and isinstance(value, str) and "\x00" in value:  # no path, name or id holds one
            raise FlareError(f"{name}: {brief(value)} contains a NUL character")
        if base is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise FlareError(f"{name}: {value!r} is not a finite number")
            return float(value)
        if base is list and isinstance(value, (list, tuple)):
            item = (typing.get_args(option) or (object,))[0]
            return [check_type(v, item, f"{name}[{i}]") for i, v in enumerate(value)]
        if base is object or (
            base is not list and base is not type(None) and isinstance(value, base)
            and not (base is int and isinstance(value, bool))
        ):
            return value
    raise FlareError(f"{name}: {brief(value)} is not a valid {_type_name(hint)}")


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def fields_of(source: type, *names: str):
    """A class decorator, applied under @dataclass: the class gets these fields of the `source`
    dataclass (type with its constraints, default) and their text from `source`'s docstring as its
    own `Args:`, which jsonargparse shows in --help. One declaration then serves both classes."""
    import docstring_parser  # only when settings are built: the adapter imports this module too

    # A postponed annotation stays one, resolved in its own module: jsonargparse then reads it as
    # it reads every other setting's (the plain type in --help, the Range shown beside it).
    hints = {
        name: typing.ForwardRef(hint, module=source.__module__) if isinstance(hint, str) else hint
        for name, hint in inspect.get_annotations(source).items()
    }
    declared = {f.name: f for f in dataclasses.fields(source)}
    docs = {p.arg_name: p.description for p in docstring_parser.parse(source.__doc__ or "").params}

    def decorate(cls: type) -> type:
        cls.__annotations__ = {**{name: hints[name] for name in names}, **inspect.get_annotations(cls)}
        for name in names:
            if declared[name].default is dataclasses.MISSING:
                raise TypeError(f"{source.__name__}.{name} needs a plain default to be shared")
            setattr(cls, name, declared[name].default)
        args = "".join(
            f"\n    {name}: " + docs[name].replace("\n", "\n        ") for name in names if docs.get(name)
        )
        cls.__doc__ = f"{inspect.cleandoc(cls.__doc__ or '')}\n\nArgs:{args}\n"
        return cls

    return decorate
