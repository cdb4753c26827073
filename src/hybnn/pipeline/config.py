"""Settings of phase 1 (VAE pretraining) and phase 3 (classifier training); no torch import."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from hybnn.errors import DataError
from hybnn.models.names import SPECS
from hybnn.pipeline.limits import check_settings
from hybnn.settings import setting

SCHEDULES = ("cosine", "linear", "constant")
DISTILL_TARGETS = ("soft", "hard")
# The distilled encoder's network: cnn, three binary convolutions and a binary dense layer
# (fully binary); resnet18, the binary ResNet-18 with one classifier output per code bit
DISTILL_STUDENTS = ("cnn", "resnet18")
STUDENT_WIDTH = {"cnn": 32, "resnet18": 16}  # default --width of each student
RESNET_STEMS = ("cifar", "imagenet")
_HEAD = SPECS["head"]


@dataclass
class PretrainConfig:
    latent_bits: int = setting(200, "latent bits of the binary code", flag="--bits")
    epochs: int = setting(20, "VAE training epochs")
    batch_size: int = setting(128, "VAE batch size")
    lr: float = setting(2e-3, "Adam learning rate")
    # beta 0.25 measured better codes for classification than the ELBO's 1.0
    beta: float = setting(0.25, "KL weight of the VAE loss")
    tau: float = setting(1.0, "temperature of the relaxed Bernoulli latent")
    # shifts measured to raise held-out bit agreement on mnist-5k (hard targets: +1.5 points)
    shift: int = setting(2, "augmentation: random shifts of up to this many pixels (0: none)")
    rotation: float = setting(12.0, "augmentation: random rotations of up to this many "
                              "degrees (0 with --zoom 0: whole-pixel shifts only)")
    zoom: float = setting(0.1, "augmentation: random scaling by up to this fraction")
    # measured on mnist-5k (one seed, 200 bits): ten-class head accuracy 94.4 % (plain VAE)
    # -> 96.8 % (with the term, shifts) -> 97.4 % (with the term, rotation + zoom + shifts)
    contrastive: float = setting(0.1, "weight per latent bit of a label-free contrastive "
                                 "term (NT-Xent between two augmented views' codes; 0: "
                                 "plain VAE)")
    seed: int = setting(0, "random seed")
    device: str = setting("cpu", "torch device: cpu, cuda, cuda:1, ...")

    def validate(self) -> PretrainConfig:
        """Refuse impossible values (NaN, inf, out of :mod:`~hybnn.pipeline.limits`) before
        any work."""
        check_settings(self)
        if self.contrastive > 0 and not (self.shift or self.rotation or self.zoom):
            raise DataError("--contrastive needs two different views of each image: use "
                            "--shift, --rotation or --zoom above 0, or --contrastive 0")
        return self


@dataclass
class TrainConfig:
    """Phase-3 training; ``epochs``/``lr`` default to the trained model's own defaults
    (:data:`hybnn.models.names.SPECS`) when built with :meth:`for_model`."""

    epochs: int = setting(_HEAD.epochs, "training epochs (default: the model's, see --model)")
    batch_size: int = setting(64, "batch size")
    lr: float = setting(_HEAD.lr, "Adam learning rate (default: the model's, see --model)")
    weight_decay: float = setting(0.0, "Adam weight decay")
    schedule: str = setting("cosine", "learning-rate schedule", choices=SCHEDULES)
    # like dropout on the codes; the head's 0.1 measured by bench/hybnn_targets.py's width
    # sweep on mnist-5k `all` (200 bits, seed 0): 96.90 % without -> 97.30 % with it
    code_noise: float = setting(0.0, "flip each input bit of a binary code with this "
                                "probability in training (codes only; 0: off)")
    seed: int = setting(0, "random seed")
    device: str = setting("cpu", "torch device: cpu, cuda, cuda:1, ...")

    @classmethod
    def for_model(cls, model: str, epochs: int | None = None, lr: float | None = None,
                  code_noise: float | None = None, **values: object) -> TrainConfig:
        """The config of ``model``'s defaults, with ``epochs``/``lr``/``code_noise`` where
        given."""
        s = SPECS[model]
        return cls(epochs=s.epochs if epochs is None else epochs,
                   lr=s.lr if lr is None else lr,
                   code_noise=s.code_noise if code_noise is None else code_noise,
                   **values)  # type: ignore[arg-type]

    def validate(self) -> TrainConfig:
        """Refuse impossible values (NaN, inf, out of :mod:`~hybnn.pipeline.limits`) before
        any work."""
        _check(self, "batch_size", self.batch_size >= 1, "at least 1")
        _check(self, "schedule", self.schedule in SCHEDULES, f"one of {', '.join(SCHEDULES)}")
        check_settings(self)
        return self


def scheduled_lr(lr: float, step: int, steps: int, schedule: str = "cosine") -> float:
    """The learning rate at ``step`` (0-based) of ``steps`` (epochs, or federated rounds):
    cosine decay from ``lr`` towards 0, ``linear`` decay (ReActNet's and ReBNN's), or
    ``constant``."""
    if schedule == "cosine":
        return 0.5 * lr * (1 + math.cos(math.pi * step / max(steps, 1)))
    if schedule == "linear":
        return lr * (1 - step / max(steps, 1))
    if schedule == "constant":
        return lr
    raise ValueError(f"unknown schedule {schedule!r}; use "
                     f"{', '.join(SCHEDULES[:-1])} or {SCHEDULES[-1]}")


def _check(config: object, name: str, ok: bool, what: str) -> None:
    if not ok:
        f = next(f for f in dataclasses.fields(config) if f.name == name)  # type: ignore[arg-type]
        flag = f.metadata.get("flag") or f"--{name.replace('_', '-')}"
        raise DataError(f"{flag} must be {what}, got {getattr(config, name)!r}")


@dataclass
class DistillConfig:
    """Distillation of the binary encoder from a frozen VAE (labels unused)."""

    epochs: int = setting(20, "distillation epochs")
    batch_size: int = setting(64, "batch size")
    lr: float = setting(5e-3, "Adam learning rate (cosine decay)")
    target: str = setting("soft", "soft: sigmoid of the VAE's logits / temperature; "
                          "hard: the VAE's bits", choices=DISTILL_TARGETS)
    temperature: float = setting(1.0, "temperature of the soft targets")
    student: str = setting("cnn", "the network that learns the codes: cnn (three binary "
                           "convs and a binary dense layer: fully binary) or resnet18 (the "
                           "binary ResNet-18, real-valued stem, shortcuts and classifier)",
                           choices=DISTILL_STUDENTS)
    width: int | None = setting(None, "cnn: filters of the first binary conv, then 2x and 4x "
                                f"(default {STUDENT_WIDTH['cnn']}); resnet18: base channels, "
                                f"then 2x, 4x, 8x (default {STUDENT_WIDTH['resnet18']}, or "
                                "--student-init's)")
    stem: str | None = setting(None, "resnet18: cifar (3x3 stride-1 stem) or imagenet (7x7 "
                               "stride 2 + max pool); default cifar, or --student-init's",
                               choices=RESNET_STEMS)
    # shifts measured to raise held-out bit agreement on mnist-5k (hard targets: +1.5 points)
    shift: int = setting(2, "augmentation: random shifts of up to this many pixels (0: none)")
    seed: int = setting(0, "random seed")
    device: str = setting("cpu", "torch device: cpu, cuda, cuda:1, ...")

    def validate(self) -> DistillConfig:
        """Refuse impossible values (NaN, inf, out of :mod:`~hybnn.pipeline.limits`) before
        any work."""
        _check(self, "target", self.target in DISTILL_TARGETS,
               f"one of {', '.join(DISTILL_TARGETS)}")
        _check(self, "student", self.student in DISTILL_STUDENTS,
               f"one of {', '.join(DISTILL_STUDENTS)}")
        _check(self, "stem", self.stem is None or self.stem in RESNET_STEMS,
               f"one of {', '.join(RESNET_STEMS)}")
        if self.student != "resnet18" and self.stem is not None:
            raise DataError("--stem is the resnet18 student's: add --student resnet18")
        check_settings(self)
        return self


RESNET_STEPS = (1, 2)
# Step 2's weight binarization: ste (sign), reactnet (sign x mean |w| per channel),
# rebnn (learned scale + ReBNN's reconstruction loss with the paper's gamma), rebnn-const
# (the same with the official code's constant gamma, see hybnn.binary.rebnn)
RESNET_METHODS = ("ste", "reactnet", "rebnn", "rebnn-const")
AUGMENTS = ("standard", "none")


@dataclass
class ResNetConfig:
    """The binary ResNet-18 and its float twin (``--model resnet18`` / ``resnet18-float``)."""

    width: int = setting(64, "base channels of the ResNet (then 2x, 4x, 8x)")
    stem: str = setting("cifar", "cifar: 3x3 stride-1 stem (28x28, 32x32 images); imagenet: "
                        "7x7 stride-2 stem + max pool", choices=RESNET_STEMS)
    step: int | None = setting(None, "resnet18: 1 binarizes the activations with real weights "
                               "(default), 2 binarizes the weights too, starting from --from")
    method: str | None = setting(None, "resnet18 step 2: how the weights are binarized "
                                 "(default: rebnn)", choices=RESNET_METHODS)
    augment: str = setting("standard", "standard: random crop (4-pixel padding, 1/8 of the "
                           "side for larger images) + horizontal flip; none", choices=AUGMENTS)
    image_size: int | None = setting(None, "folder: data: images resized to this square side "
                                     "(default: 32 for the cifar stem, 224 for imagenet)")
    workers: int = setting(2, "folder: data: DataLoader worker processes reading images")
    amp: bool = setting(False, "mixed precision: the forward pass in bfloat16 autocast (for "
                        "CUDA; weights, gradients and the optimizer stay float32)")

    def validate(self) -> ResNetConfig:
        _check(self, "stem", self.stem in RESNET_STEMS, f"one of {', '.join(RESNET_STEMS)}")
        _check(self, "step", self.step is None or self.step in RESNET_STEPS, "1 or 2")
        _check(self, "method", self.method is None or self.method in RESNET_METHODS,
               f"one of {', '.join(RESNET_METHODS)}")
        _check(self, "augment", self.augment in AUGMENTS, f"one of {', '.join(AUGMENTS)}")
        check_settings(self)
        if self.step != 2 and self.method is not None:
            raise DataError("--method chooses how step 2 binarizes the weights: use it with "
                            "--step 2")
        return self
