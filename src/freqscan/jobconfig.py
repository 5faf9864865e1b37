"""Job config files: a YAML mapping of a command's own option names to values.

``freqscan count --config FILE.yaml`` loads the file into the command's defaults (click's
``default_map``), so any flag given on the command line wins over the file. Values are checked
here against the options' types, before anything runs, and every error names the file and key.

Paths inside a file (``concepts``, ``checkpoint``, a local ``input``) are used as written: a
relative one resolves against the current directory, exactly as the same flag would. The file
itself may be local or any fsspec URL (``s3://bucket/jobs/cc3m.yaml``).
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import fsspec
import typer
import yaml

Scalar = str | int | float | bool


class JobConfigError(ValueError):
    """A job config file cannot be read or holds a bad key or value; the message says which."""


@dataclass(frozen=True)
class OptionSpec:
    """What a config key may hold: the option's value type, and whether it repeats (a list)."""

    type: type[Scalar]
    multiple: bool = False


_TYPE_NAMES: dict[type[Scalar], str] = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
}


def option_specs(command: Callable[..., Any], exclude: str | None = None) -> dict[str, OptionSpec]:
    """The keys a config file for a Typer command may set: its parameters, from their types.

    Read from the function's annotations, as Typer itself does (``list[X] | None`` is a
    repeatable ``X``; a type that is not a plain scalar, such as a choice, is given as a string).
    """
    hints = typing.get_type_hints(command)
    specs = {}
    for name, hint in hints.items():
        if name in (exclude, "return") or hint is typer.Context:
            continue
        hint = _without_none(hint)
        multiple = typing.get_origin(hint) is list
        if multiple:
            (hint,) = typing.get_args(hint)
        specs[name] = OptionSpec(hint if hint in _TYPE_NAMES else str, multiple)
    return specs


def read_job_config(path: str) -> dict[str, Any]:
    """The raw mapping of a YAML config file (local path or fsspec URL)."""
    try:
        with fsspec.open(path, "r", encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as exc:
        raise JobConfigError(f"{path}: not valid YAML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise JobConfigError(f"cannot read config file {path}: {exc}") from None
    if data is None:  # only comments: sets nothing
        return {}
    if not isinstance(data, dict):
        raise JobConfigError(
            f"{path}: expected a mapping of option names to values, got {type(data).__name__}"
        )
    return data


def check_job_config(
    raw: Mapping[Any, Any], options: Mapping[str, OptionSpec], source: str
) -> dict[str, Any]:
    """Check every key and value of ``raw`` against ``options``; return values ready for click.

    Unknown keys, missing values and wrong types raise :class:`JobConfigError` naming ``source``
    and the key. A single string for a repeatable option becomes a one-item list; an integer for
    a float option becomes a float.
    """
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or key not in options:
            raise JobConfigError(f"{source}: {_unknown_key(key, options)}")
        try:
            values[key] = _check_value(value, options[key])
        except JobConfigError as exc:
            raise JobConfigError(f"{source}: {key}: {exc}") from None
    return values


def load_job_config(path: str, options: Mapping[str, OptionSpec]) -> dict[str, Any]:
    """Read and check a config file: :func:`read_job_config` then :func:`check_job_config`."""
    return check_job_config(read_job_config(path), options, path)


def config_callback(
    ctx: typer.Context, param: typer.CallbackParam, value: str | None
) -> str | None:
    """Eager ``--config`` callback: the file's values become the command's defaults.

    Eager options are processed before all others, and click uses a ``default_map`` value only
    for an option not given on the command line, so flags override the file (a repeated flag
    such as ``--input`` replaces the file's whole list).
    """
    if value is None:
        return None
    try:
        values = load_job_config(value, option_specs(ctx.command.callback, exclude=param.name))
    except JobConfigError as exc:
        raise typer.BadParameter(str(exc), ctx=ctx, param=param) from None
    ctx.default_map = {**(ctx.default_map or {}), **values}
    return value


def _check_value(value: Any, spec: OptionSpec) -> Any:
    if value is None:
        raise JobConfigError(
            "has no value; give one, or remove the key to keep the option's default"
        )
    if not spec.multiple:
        return _check_scalar(value, spec.type)
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise JobConfigError(f"expected a non-empty list of {_TYPE_NAMES[spec.type]}s or one")
    return [_check_scalar(item, spec.type) for item in items]


def _check_scalar(value: Any, expected: type[Scalar]) -> Scalar:
    # bool is an int in Python, but `workers: true` is a mistake, not 1.
    if expected is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, expected) and (expected is bool or not isinstance(value, bool)):
        return value
    hint = " (quote it to make it a string)" if expected is str else ""
    raise JobConfigError(
        f"expected {_TYPE_NAMES[expected]}, got {value!r} ({type(value).__name__}){hint}"
    )


def _unknown_key(key: Any, options: Mapping[str, OptionSpec]) -> str:
    close = difflib.get_close_matches(str(key).replace("-", "_"), list(options), n=1)
    if close:
        return f"unknown key {key!r}; did you mean {close[0]!r}?"
    return f"unknown key {key!r}; keys are the command's option names: {', '.join(options)}"


def _without_none(hint: Any) -> Any:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0] if len(args) == 1 else hint
    return hint
