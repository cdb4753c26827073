"""A griffe extension for the API reference: hybnn's docstrings cross-reference with Sphinx
roles (:class:`Head`, :func:`~hybnn.engine.load`), which Markdown would print as they are.

Each role becomes a code span that links to the object when the site documents it (an
optional autoref: no link, and no warning, when it does not). A ``~`` shows the last part
of the name, as Sphinx does.
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|exc|obj):`(~?)([\w.]+)(?:\(\))?`")


def _identifier(obj: griffe.Object, name: str) -> str | None:
    """The full path ``name`` stands for in ``obj``'s docstring, or None."""
    if name.startswith("."):  # relative to the module: ``:mod:`.vae``` in hybnn.encoders
        module = obj if obj.is_module else obj.module
        return f"{module.path}{name}"
    try:
        return obj.resolve(name.split(".")[0]) + name[len(name.split(".")[0]):]
    except (griffe.NameResolutionError, ValueError, AttributeError):
        return name if "." in name else None


class SphinxRoles(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is None:
            return

        def link(match: re.Match[str]) -> str:
            short, name = match.groups()
            shown = name.rsplit(".", 1)[-1] if short else name.lstrip(".")
            target = _identifier(obj, name)
            if target is None:
                return f"`{shown}`"
            return (f'<autoref identifier="{html.escape(target)}" optional>'
                    f"<code>{html.escape(shown)}</code></autoref>")

        obj.docstring.value = ROLE.sub(link, obj.docstring.value)
