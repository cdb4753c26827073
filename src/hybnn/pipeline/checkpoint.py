"""Training checkpoints: one atomic file per run, bound to the run that wrote it.

A checkpoint holds the model and optimizer state, the epochs done and their history, and a
tag computed from the model's shapes, the run's settings and the training data itself, so
resuming with other data (codes of another encoder, other images) or settings is refused.
It is a torch file read back with ``torch.load(weights_only=True)``: tensors and plain
containers only, no arbitrary objects are unpickled.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hybnn.artifacts import MAX_WEIGHTS_BYTES, atomic_write, read_regular
from hybnn.errors import ArtifactError
from hybnn.hooks import History

CHECKPOINT_NAME = "checkpoint.pt"


def run_tag(model: nn.Module, settings: dict[str, Any], *data: torch.Tensor) -> str:
    """Identifies a run: model class and shapes, its settings, and the bytes of its data."""
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    digest = hashlib.sha256()
    for t in data:
        digest.update(str((t.dtype, tuple(t.shape))).encode())
        digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    blob = json.dumps([type(model).__name__, shapes, settings, digest.hexdigest()],
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def save_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    epoch: int, history: History, tag: str) -> None:
    state = {
        "epoch": epoch,
        "tag": tag,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "history": json.dumps(history.epochs),
    }
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write(path, lambda p: p.write_bytes(buf.getvalue()))


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    tag: str) -> tuple[int, History]:
    """Restore ``model`` and ``optimizer``; returns (epochs done, their history)."""
    data = read_regular(path, "checkpoint", MAX_WEIGHTS_BYTES)
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise ValueError(f"holds a {type(state).__name__}, not a checkpoint")
        if state.get("tag") != tag:
            raise ArtifactError(
                f"checkpoint {path} belongs to another run (model, data or settings differ); "
                "remove it or drop --resume"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        return int(state["epoch"]), History(json.loads(state["history"]))
    except ArtifactError:
        raise
    except Exception as exc:  # torch raises many types for a bad file
        raise ArtifactError(f"cannot resume from {path}: corrupt checkpoint ({exc})") from None
