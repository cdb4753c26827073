"""Declared settings: a dataclass field with its help text, the one place a default lives.

Config dataclasses across hybnn declare their fields with :func:`setting`; the CLI
(:mod:`hybnn.cli.flags`) turns those fields into flags, so a default, a help text or a
choice list is written once, beside the field it belongs to. Nothing here imports torch.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, Field, field, fields, is_dataclass, replace
from typing import Any

from hybnn.errors import DataError


def setting(
    default: Any = MISSING,
    help: str = "",
    *,
    factory: Callable[[], Any] | None = None,
    flag: str | None = None,
    choices: Sequence[Any] | None = None,
    metavar: str | None = None,
    positional: bool = False,
    cli: bool = True,
    negatable: bool = False,
) -> Any:
    """A dataclass field with CLI metadata.

    ``flag`` overrides the flag name (default ``--field-name``); ``positional`` makes it a
    positional argument; ``cli=False`` keeps an internal field off the command line;
    ``negatable`` gives a bool both ``--name`` and ``--no-name`` (for a default a preset
    changes, e.g. on in full runs and off in quick ones).
    """
    meta = {"help": help, "flag": flag, "choices": tuple(choices) if choices else None,
            "metavar": metavar, "positional": positional, "cli": cli, "negatable": negatable}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def setting_key(f: Field[Any]) -> str:
    """A setting's name outside Python: its flag without the dashes in front
    (``vae-epochs``, ``noise-multiplier``), whatever group declares it."""
    return str(f.metadata.get("flag") or f.name.replace("_", "-")).lstrip("-")


def flatten(settings: Any) -> dict[str, Any]:
    """The values of a settings dataclass by :func:`setting_key`, nested groups flattened."""
    out: dict[str, Any] = {}
    for f in fields(settings):
        value = getattr(settings, f.name)
        if is_dataclass(value) and not isinstance(value, type):
            out.update(flatten(value))
        else:
            out[setting_key(f)] = value
    return out


def unflatten(cls: type, values: Mapping[str, Any], strict: bool = True,
              convert: Callable[[Any, type], Any] | None = None,
              base: Any = None) -> Any:
    """An instance of the settings dataclass ``cls`` from values keyed by
    :func:`setting_key` (underscores may stand for dashes), each put into the group that
    declares it; the rest keep ``base``'s values (default: the defaults). ``strict`` refuses
    a key that names no setting; ``convert(value, type of the default)`` coerces values."""
    given = {k.replace("_", "-"): v for k, v in values.items()}
    base = base or cls()
    if strict and (unknown := sorted(set(given) - set(known := list(flatten(base))))):
        close = difflib.get_close_matches(unknown[0], known, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise DataError(f"not a setting of {cls.__name__}: {', '.join(unknown)}{hint}")
    return _unflatten(cls, given, convert, base)


def _unflatten(cls: type, given: Mapping[str, Any], convert: Callable[[Any, type], Any] | None,
               base: Any) -> Any:
    changes: dict[str, Any] = {}
    for f in fields(cls):
        current = getattr(base, f.name)
        if is_dataclass(current) and not isinstance(current, type):
            changes[f.name] = _unflatten(type(current), given, convert, current)
        elif (key := setting_key(f)) in given:
            value = given[key]
            changes[f.name] = convert(value, type(current)) if convert else value
    return replace(base, **changes)


def from_dict(cls: type, values: Mapping[str, Any]) -> Any:
    """An instance of the settings dataclass ``cls`` from :func:`dataclasses.asdict`'s nested
    dicts (a config recorded in a results file)."""
    known = {f.name: f for f in fields(cls)}
    if unknown := sorted(set(values) - set(known)):
        raise DataError(f"not a setting of {cls.__name__}: {', '.join(unknown)}")
    defaults = cls()
    out: dict[str, Any] = {}
    for name, value in values.items():
        current = getattr(defaults, name)
        nested = is_dataclass(current) and not isinstance(current, type)
        out[name] = from_dict(type(current), value) if nested and isinstance(value, Mapping) \
            else value
    return cls(**out)
