"""Build argparse flags from option dataclasses, and options back from parsed flags.

A field declared with :func:`hybnn.settings.setting` becomes ``--field-name`` (or its
``flag``), typed from its annotation: ``bool`` fields are switches (``--name`` for a False
default, ``--no-name`` for a True one), ``list[...]`` fields take one or more values, and a
field without a default is required. A nested dataclass field contributes its own fields
(an outer setting with the same flag wins). Defaults are left to the dataclasses: argparse only
reports the flags a user gave, so ``--quick`` style presets can fill the rest. A numeric
field's help gives its range (:data:`hybnn.pipeline.limits.LIMITS`, checked when the options
are built).
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import types
import typing
from typing import Any, Union

from hybnn.pipeline.limits import limit_of
from hybnn.settings import setting_key

_SCALARS = (int, float, str)


def _unwrap(tp: Any) -> tuple[Any, bool]:
    """(the base type, whether it is a list) of an annotation such as ``list[int] | None``."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        tp = args[0]
    if typing.get_origin(tp) in (list, tuple):
        return typing.get_args(tp)[0], True
    return tp, False


def _default_text(f: dataclasses.Field[Any]) -> str | None:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return None
    if value is None or value == "" or isinstance(value, bool):
        return None
    if isinstance(value, list | tuple):
        return " ".join(map(str, value)) if value else None
    return str(value)


def fields_of(cls: type) -> list[tuple[str, dataclasses.Field[Any], Any]]:
    """(dotted path, field, resolved type) of every CLI field of ``cls``, nested included."""
    hints = typing.get_type_hints(cls)
    own = [f for f in dataclasses.fields(cls) if f.metadata.get("cli", True)]
    flags = {setting_key(f) for f in own if not _is_group(hints[f.name])}
    out: list[tuple[str, dataclasses.Field[Any], Any]] = []
    for f in own:
        tp = hints[f.name]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            out += [(f"{f.name}.{path}", g, t) for path, g, t in fields_of(tp)
                    if setting_key(g) not in flags]
        else:
            out.append((f.name, f, tp))
    return out


def _is_group(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _owner(cls: type, path: str) -> type:
    """The dataclass that declares the field at dotted ``path`` of ``cls``."""
    for name in path.split(".")[:-1]:
        cls = typing.get_type_hints(cls)[name]
    return cls


def add_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one flag per CLI field of the option dataclass ``cls`` to ``parser``; the fields of
    a nested settings group are listed under its title in ``--help``."""
    groups: dict[type, argparse._ArgumentGroup] = {}
    for path, f, tp in fields_of(cls):
        owner = _owner(cls, path)
        target: argparse.ArgumentParser | argparse._ArgumentGroup = parser
        if owner is not cls and (title := _group_title(owner)):
            target = groups.setdefault(owner, parser.add_argument_group(title))
        _add_flag(target, cls, path, f, tp)


def _group_title(owner: type) -> str:
    """A settings group's title in ``--help``: the first line of its docstring."""
    doc = (owner.__doc__ or "").strip()
    if not doc or doc.startswith(owner.__name__ + "("):  # dataclass's generated signature
        return ""
    title = re.sub(r":\w+:`~?([^`]*)`", r"\1", doc.splitlines()[0]).replace("``", "")
    return title.rstrip(".")


def _add_flag(parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type, path: str,
              f: dataclasses.Field[Any], tp: Any) -> None:
    """One flag: ``f`` at dotted ``path`` of ``cls``, typed ``tp``."""
    meta = f.metadata
    base, many = _unwrap(tp)
    dest = path.replace(".", "__")
    name = f.name.replace("_", "-")
    help_text = meta.get("help", "")
    default, limit = _default_text(f), limit_of(_owner(cls, path), f.name)
    notes = ([f"default: {default}"] if default is not None else []) + (
        [f"range {limit.short()}"] if limit is not None else [])
    if notes:
        help_text = f"{help_text} ({'; '.join(notes)})" if help_text else "; ".join(notes)
    kwargs: dict[str, Any] = {"dest": dest, "help": help_text.replace("%", "%%"),
                              "default": argparse.SUPPRESS}
    if base is bool and meta.get("negatable"):
        parser.add_argument(f"--{name}", action=argparse.BooleanOptionalAction, **kwargs)
        return
    if base is bool:
        on = f.default is not True
        if not on:
            kwargs["help"] = f"turn off: {kwargs['help']}"
        flag = meta.get("flag") or (f"--{name}" if on else f"--no-{name}")
        parser.add_argument(flag, action="store_true" if on else "store_false", **kwargs)
        return
    if base not in _SCALARS:
        raise TypeError(f"{cls.__name__}.{f.name}: unsupported flag type {tp}")
    kwargs["type"] = base
    kwargs["metavar"] = (meta.get("flag") or name).lstrip("-").replace("-", "_").upper()
    if meta.get("choices"):
        kwargs.pop("metavar")
        kwargs["choices"] = meta["choices"]
    if meta.get("metavar"):
        kwargs["metavar"] = meta["metavar"]
    if many:
        kwargs["nargs"] = "+"
    required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    if meta.get("positional"):
        kwargs.pop("dest")
        kwargs["metavar"] = kwargs.get("metavar") or f.name.upper()
        parser.add_argument(dest, **kwargs)
        return
    parser.add_argument(meta.get("flag") or f"--{name}", required=required, **kwargs)


def given(args: argparse.Namespace, prefix: str = "") -> dict[str, Any]:
    """The flags a user gave under ``prefix`` (``config__`` for a nested config)."""
    return {k[len(prefix):]: v for k, v in vars(args).items()
            if k.startswith(prefix) and "__" not in k[len(prefix):]
            and k not in ("func", "command", "study", "argv", "recipe")}


def given_settings(cls: type, args: argparse.Namespace, prefix: str = "") -> dict[str, Any]:
    """The flags a user gave for the settings dataclass ``cls`` (under ``prefix``, e.g.
    ``config__``), nested groups included, keyed by their flag names with underscores
    (``head_epochs``): what ``make(**values)`` presets such as ``--quick`` take."""
    values = vars(args)
    return {setting_key(f).replace("-", "_"): values[dest]
            for path, f, _ in fields_of(cls)
            if (dest := prefix + path.replace(".", "__")) in values}


def build(cls: type, args: argparse.Namespace, **nested: Any) -> Any:
    """An instance of ``cls`` from the parsed flags; ``nested`` gives ready nested configs,
    other nested dataclasses (at any depth) are built from their flags with their own
    defaults."""
    return _build(cls, args, "", nested)


def _build(cls: type, args: argparse.Namespace, prefix: str, ready: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in given(args, prefix).items() if k in names}
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            values[f.name] = ready.get(f.name) or _build(tp, args, f"{prefix}{f.name}__", {})
    return cls(**values)
