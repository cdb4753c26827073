"""The models hybnn trains, one name each, with their training defaults (no torch import).

The same name is used by the CLI (``--model``), in saved artifacts (``meta.json``
``config.arch``), in reports and in the engine file; :data:`CLASS_OF` names the class in
:mod:`hybnn.models` that implements it. Each default is defined here once.
"""

from __future__ import annotations

from dataclasses import dataclass

from hybnn.errors import DataError


@dataclass(frozen=True)
class ModelSpec:
    name: str
    class_name: str
    title: str
    binary: bool
    inputs: str  # "codes" (packed binary codes) or "images"
    epochs: int  # default training epochs
    lr: float  # default Adam learning rate
    code_noise: float = 0.0  # default probability of flipping each input bit in training


SPECS: dict[str, ModelSpec] = {
    "head": ModelSpec("head", "BNNHead", "HyBNN: BNN head on binary codes", True, "codes",
                       100, 1e-2, 0.1),
    "bcnn": ModelSpec("bcnn", "BinaryCNN", "binary CNN", True, "images", 15, 1e-2),
    "fpcnn": ModelSpec("fpcnn", "FloatCNN", "full-precision CNN", False, "images", 15, 1e-3),
    # ReBNN's released recipe: Adam at 1e-3 (ImageNet: 256 epochs; CIFAR-sized runs fewer)
    "resnet18": ModelSpec("resnet18", "BinaryResNet", "binary ResNet-18 (ReActNet blocks)",
                          True, "images", 120, 1e-3),
    "resnet18-float": ModelSpec("resnet18-float", "FloatResNet", "float ResNet-18 (the "
                                "binary one's twin and teacher)", False, "images", 120, 1e-3),
}
MODEL_NAMES = tuple(SPECS)  # the trainable models: head, bcnn, fpcnn, resnet18, resnet18-float
RESNET_NAMES = ("resnet18", "resnet18-float")  # trained by hybnn.pipeline.resnet
PAPER_MODELS = ("head", "bcnn", "fpcnn")  # the HyBNN paper's models (federated learning too)
VAE = "vae"  # the phase-1 encoder's architecture name
BINARY_ENCODER = "binary-encoder"  # the encoder distilled from the VAE (`hybnn distill`)
INT8_ENCODER = "int8-encoder"  # the VAE's encoder as a static int8 ONNX graph (`hybnn quantize`)
# Where a VAE encoder's codes come from (`hybnn recode`): its Bernoulli latent (the paper's),
# or the sign of the batch-normed map of its second or third conv block (wider codes).
CODE_LAYER_NAMES = ("latent", "conv2", "conv3")
FULLY_BINARY = "fully-binary"  # binary encoder + BNN head as one engine network
CLASS_OF = {**{s.name: s.class_name for s in SPECS.values()}, VAE: "BinaryLatentVAE",
            BINARY_ENCODER: "BinaryEncoder", FULLY_BINARY: "FullyBinaryHyBNN"}
# Names written by hybnn 0.1.0 artifacts, read as the current ones.
LEGACY_NAMES = {"bnn_head": "head", "hybnn": "head", "binary_cnn": "bcnn", "fp_cnn": "fpcnn"}


def spec(name: str) -> ModelSpec:
    """The spec of a trainable model, with a clear error for an unknown name."""
    try:
        return SPECS[name]
    except KeyError:
        raise DataError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}") from None


def run_key(model: str, prep: str | None = None) -> str:
    """Key of a run in reports: the model name, with the input preparation for variants
    of one model (``bcnn_unit`` is the paper's setting, ``bcnn_centered`` the fair one)."""
    return f"{model}_{prep}" if prep else model


def default_head_hidden(num_classes: int) -> list[int]:
    """The BNN head's hidden widths for ``num_classes``: 128 for two classes, 512 for more
    (the widths the paper's pair tasks and the ten-class task are measured with)."""
    return [128] if num_classes <= 2 else [512]
