"""Save and load trained models as safetensors + JSON bundles (never pickle)."""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from hybnn.artifacts import load_artifact, save_artifact
from hybnn.data.names import PREPS
from hybnn.errors import ArtifactError
from hybnn.models.binary_cnn import BinaryCNN
from hybnn.models.binary_resnet import BinaryResNet, FloatResNet
from hybnn.models.bnn_head import BNNHead
from hybnn.models.float_cnn import FloatCNN
from hybnn.models.names import LEGACY_NAMES, MODEL_NAMES, VAE
from hybnn.models.vae import BinaryLatentVAE
from hybnn.models.weights import build_checked

MODEL_KIND = "model"
ARCHITECTURES: dict[str, type[nn.Module]] = {
    "head": BNNHead,
    "bcnn": BinaryCNN,
    "fpcnn": FloatCNN,
    "resnet18": BinaryResNet,
    "resnet18-float": FloatResNet,
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
    return save_artifact(directory, MODEL_KIND, model.state_dict(), config, extra)


def load_model(directory: str | os.PathLike[str]) -> tuple[nn.Module, dict[str, Any]]:
    """Load a model saved by :func:`save_model`; returns (model in eval mode, metadata).

    ``meta.json`` is not covered by the weights' fingerprint, so every field used later is
    checked here: the architecture and its config (:mod:`hybnn.models.weights`), and that
    ``task``, ``source``, ``prep`` and ``encoder_fingerprint`` are strings (``prep`` a known one).
    """
    tensors, meta = load_artifact(directory, MODEL_KIND)
    config = meta.get("config")
    if not isinstance(config, dict) or not isinstance(config.get("arch_config"), dict):
        raise ArtifactError(f"{directory}: model metadata lacks an architecture config")
    for key in ("task", "source", "prep", "encoder_fingerprint"):
        if meta.get(key) is not None and not isinstance(meta[key], str):
            raise ArtifactError(f"{directory}: {key} in the model metadata must be a string, "
                                f"got {meta[key]!r}")
    if meta.get("prep") is not None and meta["prep"] not in PREPS:
        raise ArtifactError(f"{directory}: unknown input preparation {meta['prep']!r} in the "
                            f"model metadata; expected one of {', '.join(PREPS)}")
    arch = LEGACY_NAMES.get(str(config.get("arch")), str(config.get("arch")))
    model = build_checked(lambda **c: build_model(arch, c), config["arch_config"], tensors,
                          str(directory))
    model.eval()
    config["arch"] = arch
    return model, meta


def load_classifier(directory: str | os.PathLike[str]) -> tuple[nn.Module, dict[str, Any]]:
    """:func:`load_model`, refusing a model that is not a classifier (a VAE saved as one)."""
    model, meta = load_model(directory)
    if meta["config"]["arch"] not in MODEL_NAMES:
        raise ArtifactError(f"{directory} holds a {meta['config']['arch']!r} model, not a "
                            f"classifier ({', '.join(MODEL_NAMES)}); an encoder's VAE is "
                            "given as --encoder")
    return model, meta
