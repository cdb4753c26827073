"""Build argparse flags from option dataclasses, and options back from parsed flags.

A field declared with :func:`hybnn.settings.setting` becomes ``--field-name`` (or its
``flag``), typed from its annotation: ``bool`` fields are switches (``--name`` for a False
default, ``--no-name`` for a True one), ``list[...]`` fields take one or more values, and a
field without a default is required. A nested dataclass field contributes its own fields
(an outer field of the same name wins). Defaults are left to the dataclasses: argparse only
reports the flags a user gave, so ``--quick`` style presets can fill the rest. A numeric
field's help gives its range (:data:`hybnn.pipeline.limits.LIMITS`, checked when the options
are built).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, Union

from hybnn.pipeline.limits import limit_of

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
    names = {f.name for f in own}
    out: list[tuple[str, dataclasses.Field[Any], Any]] = []
    for f in own:
        tp = hints[f.name]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            out += [(f"{f.name}.{path}", g, t) for path, g, t in fields_of(tp)
                    if path.split(".")[0] not in names]
        else:
            out.append((f.name, f, tp))
    return out


def _owner(cls: type, path: str) -> type:
    """The dataclass that declares the field at dotted ``path`` of ``cls``."""
    for name in path.split(".")[:-1]:
        cls = typing.get_type_hints(cls)[name]
    return cls


def add_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one flag per CLI field of the option dataclass ``cls`` to ``parser``."""
    for path, f, tp in fields_of(cls):
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
            continue
        if base is bool:
            on = f.default is not True
            if not on:
                kwargs["help"] = f"turn off: {kwargs['help']}"
            flag = meta.get("flag") or (f"--{name}" if on else f"--no-{name}")
            parser.add_argument(flag, action="store_true" if on else "store_false", **kwargs)
            continue
        if base not in _SCALARS:
            raise TypeError(f"{cls.__name__}.{f.name}: unsupported flag type {tp}")
        kwargs["type"] = base
        kwargs["metavar"] = f.name.upper()
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
            continue
        parser.add_argument(meta.get("flag") or f"--{name}", required=required, **kwargs)


def given(args: argparse.Namespace, prefix: str = "") -> dict[str, Any]:
    """The flags a user gave under ``prefix`` (``config__`` for a nested config)."""
    return {k[len(prefix):]: v for k, v in vars(args).items()
            if k.startswith(prefix) and "__" not in k[len(prefix):]
            and k not in ("func", "command", "study", "argv", "recipe")}


def build(cls: type, args: argparse.Namespace, **nested: Any) -> Any:
    """An instance of ``cls`` from the parsed flags; ``nested`` gives ready nested configs,
    other nested dataclasses are built from their flags with their own defaults."""
    hints = typing.get_type_hints(cls)
    values = given(args)
    values = {k: v for k, v in values.items() if k in {f.name for f in dataclasses.fields(cls)}}
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            values[f.name] = nested.get(f.name) or tp(**given(args, f"{f.name}__"))
    return cls(**values)
