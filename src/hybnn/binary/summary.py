"""A larq-style model summary: binary vs float parameters and deployed bytes per layer."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from hybnn.binary.layers import BinaryLayer


@dataclass(frozen=True)
class LayerSummary:
    name: str
    kind: str
    binary_params: int
    float_params: int

    @property
    def deployed_bytes(self) -> int:
        """1 bit per binary weight (rounded up to whole bytes), 4 bytes per float parameter."""
        return (self.binary_params + 7) // 8 + 4 * self.float_params


def model_summary(model: nn.Module) -> list[LayerSummary]:
    """One row per leaf module that owns parameters."""
    rows = []
    for name, module in model.named_modules():
        own = list(module.named_parameters(recurse=False))
        if not own:
            continue
        binary = sum(p.numel() for n, p in own if isinstance(module, BinaryLayer) and n == "weight")
        total = sum(p.numel() for _, p in own)
        rows.append(LayerSummary(name or "<root>", type(module).__name__, binary, total - binary))
    return rows


def summary_table(model: nn.Module) -> str:
    """Human-readable table of :func:`model_summary` with totals and the float32 comparison."""
    rows = model_summary(model)
    lines = [f"{'layer':<24}{'type':<16}{'binary':>10}{'float':>10}{'bytes':>10}"]
    for r in rows:
        lines.append(
            f"{r.name:<24}{r.kind:<16}{r.binary_params:>10}{r.float_params:>10}"
            f"{r.deployed_bytes:>10}"
        )
    nb = sum(r.binary_params for r in rows)
    nf = sum(r.float_params for r in rows)
    deployed = sum(r.deployed_bytes for r in rows)
    fp32 = 4 * (nb + nf)
    lines.append(f"{'total':<40}{nb:>10}{nf:>10}{deployed:>10}")
    ratio = fp32 / deployed if deployed else float("nan")
    lines.append(f"deployed: {deployed} B vs {fp32} B as float32 ({ratio:.1f}x smaller)")
    return "\n".join(lines)


def deployed_bytes(model: nn.Module) -> int:
    return sum(r.deployed_bytes for r in model_summary(model))
