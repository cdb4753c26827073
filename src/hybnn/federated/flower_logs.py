"""Flower's console log as hybnn's users read it: plain text where stderr is not a terminal
(a log file, CI, a pipe: no ANSI colour codes), and without the deprecation notice of the
simulation entry point hybnn chose knowingly (``run_simulation``; its successor, ``flwr run``,
needs an installed app and a SuperLink, which ``hybnn federate --deploy`` already uses)."""

from __future__ import annotations

import logging
import sys

KNOWN_DEPRECATIONS = ("`run_simulation` function is deprecated",)


class _DropKnownDeprecations(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("DEPRECATED FEATURE" in message
                    and any(known in message for known in KNOWN_DEPRECATIONS))


_FILTER = _DropKnownDeprecations()


def plain_flower_logs() -> None:
    """Colour Flower's console log only on a terminal, and drop the known deprecations.
    Idempotent; call it after Flower is imported."""
    from flwr.common.logger import FLOWER_LOGGER, update_console_handler

    update_console_handler(colored=sys.stderr.isatty())
    if _FILTER not in FLOWER_LOGGER.filters:
        FLOWER_LOGGER.addFilter(_FILTER)
