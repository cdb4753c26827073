"""Save and load trained models as safetensors + JSON bundles (never pickle)."""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from hybnn.artifacts import load_bundle, save_bundle
from hybnn.errors import ArtifactError
from hybnn.models.binary_cnn import BinaryCNN
from hybnn.models.bnn_head import BNNHead
from hybnn.models.float_cnn import FloatCNN
from hybnn.models.names import LEGACY_NAMES, VAE
from hybnn.models.vae import BinaryLatentVAE

MODEL_KIND = "model"
ARCHITECTURES: dict[str, type[nn.Module]] = {
    "hybnn": BNNHead,
    "bcnn": BinaryCNN,
    "fpcnn": FloatCNN,
    VAE: BinaryLatentVAE,
}


def arch_name(model: nn.Module) -> str:
    for name, cls in ARCHITECTURES.items():
        if type(model) is cls:
            return name
    raise TypeError(f"cannot save a {type(model).__name__}: not a hybnn architecture")


def build_model(arch: str, config: dict[str, Any]) -> nn.Module:
    """Rebuild an architecture from its JSON config (``model.config``)."""
    arch = LEGACY_NAMES.get(arch, arch)
    if arch not in ARCHITECTURES:
        raise ArtifactError(f"unknown architecture {arch!r} in model metadata")
    try:
        return ARCHITECTURES[arch](**config)
    except (TypeError, ValueError) as exc:
        raise ArtifactError(f"model config does not fit architecture {arch!r}: {exc}") from None


def save_model(
    directory: str | os.PathLike[str], model: nn.Module, **extra: Any
) -> dict[str, Any]:
    """Save ``model`` (state dict + config) and ``extra`` metadata (task, prep, fingerprints)."""
    config = {"arch": arch_name(model), "arch_config": model.config}
    return save_bundle(directory, MODEL_KIND, model.state_dict(), config, extra)


def load_model(directory: str | os.PathLike[str]) -> tuple[nn.Module, dict[str, Any]]:
    """Load a model saved by :func:`save_model`; returns (model in eval mode, metadata)."""
    tensors, meta = load_bundle(directory, MODEL_KIND)
    config = meta.get("config")
    if not isinstance(config, dict) or not isinstance(config.get("arch_config"), dict):
        raise ArtifactError(f"{directory}: model metadata lacks an architecture config")
    model = build_model(str(config.get("arch")), config["arch_config"])
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise ArtifactError(f"weights in {directory} do not fit the model: {first}") from None
    model.eval()
    config["arch"] = LEGACY_NAMES.get(str(config.get("arch")), config.get("arch"))
    return model, meta
