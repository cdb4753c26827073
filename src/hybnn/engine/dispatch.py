"""Which kernels run: the best ISA of this CPU, or the one forced by ``HYBNN_ENGINE_ISA`` /
:func:`set_isa` (``scalar``, ``avx2``, ``avx512`` on x86-64; ``scalar``, ``neon`` on aarch64).
Every ISA gives bit-identical results."""

from __future__ import annotations

import os
import warnings

try:
    from hybnn.engine import _kernels
except ImportError as exc:  # pragma: no cover - only without a build
    raise ImportError(
        "hybnn.engine._kernels is not built; reinstall hybnn with `pip install -e .` "
        f"(a C compiler is needed): {exc}"
    ) from exc

ISAS = ("scalar", "avx2", "avx512", "neon")
ENV_VAR = "HYBNN_ENGINE_ISA"


def isa() -> str:
    """The ISA whose kernels run now."""
    return _kernels.isa()


def detect_isa() -> str:
    """The fastest ISA this CPU supports (what runs unless forced)."""
    return _kernels.detect_isa()


def available_isas() -> list[str]:
    """ISAs this CPU can run, slowest first."""
    return list(_kernels.supported_isas())


def set_isa(name: str | None) -> None:
    """Force the kernels of ``name``; ``None`` or ``"auto"`` goes back to the best one."""
    if name is None or name == "auto":
        name = detect_isa()
    if name not in ISAS:
        raise ValueError(f"unknown ISA {name!r}; choose one of {', '.join(ISAS)} or 'auto'")
    _kernels.set_isa(name)


def _apply_env() -> None:
    wanted = os.environ.get(ENV_VAR, "").strip().lower()
    if not wanted:
        return
    try:
        set_isa(wanted)
    except ValueError as exc:
        warnings.warn(f"{ENV_VAR}={wanted!r} ignored: {exc}", RuntimeWarning, stacklevel=2)


_apply_env()
