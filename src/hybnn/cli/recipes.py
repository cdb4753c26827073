"""Recipe files: a command's settings in TOML, read by ``--config FILE``; flags override them.

A recipe holds settings by field name (``epochs = 20``) or flag name (``bits = 200``), either
at its top level or, so one file can hold a whole workflow, in a table named after the command
(``[reproduce]``, ``[federate]``, ``[study-rebnn]``): where the file has a table of the command,
only that table applies. Every key must be a setting of the command and every value of its
type; anything else is one ``hybnn: error:`` line, before any work.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path
from typing import Any

from hybnn.artifacts import read_regular
from hybnn.errors import DataError

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, as a package (a dependency there)
    import tomli as tomllib

MAX_RECIPE_BYTES = 1 << 20


def read_recipe(path: str, command: str) -> dict[str, Any]:
    """The settings ``path`` gives ``command`` (its table, else its top-level keys)."""
    raw = read_regular(Path(path), "recipe", MAX_RECIPE_BYTES, DataError)
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise DataError(f"recipe {path} is not valid TOML: {exc}") from None
    table = doc.get(command)
    if isinstance(table, dict):
        return table
    return {k: v for k, v in doc.items() if not isinstance(v, dict)}


def recipe_defaults(parser: argparse.ArgumentParser, settings: dict[str, Any], path: str,
                    command: str) -> dict[str, Any]:
    """``settings`` as argparse defaults of ``parser`` (dest -> value), each checked against
    the flag it stands for."""
    actions: dict[str, argparse.Action] = {}
    by_field: dict[str, list[argparse.Action]] = {}
    for action in parser._actions:
        if not action.option_strings or action.dest in ("help", "recipe"):
            continue
        by_field.setdefault(action.dest.split("__")[-1], []).append(action)
        for flag in action.option_strings:
            actions[flag.lstrip("-").replace("-", "_")] = action
    # a field name stands for its flag only where one group has it (``epochs`` of reproduce's
    # VAE, head and CNN groups is ambiguous: vae_epochs, head_epochs, cnn_epochs are not)
    for name, group in by_field.items():
        if len(group) == 1:
            actions.setdefault(name, group[0])
    out: dict[str, Any] = {}
    for key, value in settings.items():
        found = actions.get(key.replace("-", "_"))
        if found is None:
            close = difflib.get_close_matches(key.replace("-", "_"), list(actions), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise DataError(f"recipe {path}: {key!r} is not a setting of hybnn {command}{hint}")
        out[found.dest] = _value(found, key, value, path)
    return out


def _value(action: argparse.Action, key: str, value: Any, path: str) -> Any:
    where = f"recipe {path}: {key}"
    if action.nargs == 0 or isinstance(action, argparse.BooleanOptionalAction):
        if not isinstance(value, bool):
            raise DataError(f"{where} must be true or false, got {value!r}")
        return value
    kind = action.type if isinstance(action.type, type) else str
    items = value if isinstance(value, list) else None
    if action.nargs == "+":
        if items is None or not items:
            raise DataError(f"{where} must be a non-empty list, got {value!r}")
        return [_scalar(kind, v, where, action) for v in items]
    if items is not None:
        raise DataError(f"{where} takes one value, got a list")
    return _scalar(kind, value, where, action)


def _scalar(kind: type, value: Any, where: str, action: argparse.Action) -> Any:
    ok = (isinstance(value, kind) and not isinstance(value, bool)) or (
        kind is float and isinstance(value, int) and not isinstance(value, bool))
    if not ok:
        raise DataError(f"{where} must be {kind.__name__}, got {value!r}")
    value = kind(value)
    if action.choices is not None and value not in action.choices:
        raise DataError(f"{where} must be one of {', '.join(map(str, action.choices))}, "
                        f"got {value!r}")
    return value
