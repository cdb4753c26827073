"""Declared settings: a dataclass field with its help text, the one place a default lives.

Config dataclasses across hybnn declare their fields with :func:`setting`; the CLI
(:mod:`hybnn.cli.flags`) turns those fields into flags, so a default, a help text or a
choice list is written once, beside the field it belongs to. Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import MISSING, field
from typing import Any


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
