"""Settings of the main job (``hybnn reproduce``) and of the ReBNN study; no torch import."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, cast

from hybnn.binary.names import METHODS
from hybnn.data.names import DEFAULT_SOURCE, PAPER_TASKS
from hybnn.errors import DataError
from hybnn.models.names import SPECS
from hybnn.pipeline.config import PretrainConfig, TrainConfig
from hybnn.settings import setting, unflatten

DEFAULT_DATA = DEFAULT_SOURCE
# What --quick changes (< 3 minutes on 2 cores), by flag name; every other setting keeps its
# default.
REPRODUCE_QUICK = {"seeds": [0], "vae_epochs": 5, "head_epochs": 40, "cnn_epochs": 3,
                   "vae_samples": 4000, "max_train": 1000, "continual": False}


@dataclass(frozen=True)
class VaeStage:
    """Phase 1: the binary-latent VAE, pretrained once on the general data."""

    latent_bits: int = setting(PretrainConfig.latent_bits, "latent bits of the VAE",
                               flag="--bits")
    epochs: int = setting(PretrainConfig.epochs, "phase-1 epochs (quick: 5)",
                          flag="--vae-epochs")
    samples: int | None = setting(None, "subsample the general data for phase 1 (default: "
                                  "all; quick: 4000)", flag="--vae-samples")
    beta: float = setting(PretrainConfig.beta, "KL weight of the VAE", flag="--vae-beta")
    shift: int = setting(PretrainConfig.shift, "VAE shift augmentation in pixels",
                         flag="--vae-shift")
    contrastive: float = setting(PretrainConfig.contrastive, "weight per bit of the VAE's "
                                 "label-free contrastive term (0: plain VAE)",
                                 flag="--vae-contrastive")

    def pretrain_config(self, seed: int, device: str) -> PretrainConfig:
        return PretrainConfig(latent_bits=self.latent_bits, epochs=self.epochs, beta=self.beta,
                              shift=self.shift, contrastive=self.contrastive, seed=seed,
                              device=device)


@dataclass(frozen=True)
class HeadStage:
    """Phase 3: the BNN head on the codes."""

    hidden: list[int] = setting(help="hidden widths of the pair-task head",
                                factory=lambda: [128], flag="--head-hidden")
    hidden_multiclass: list[int] = setting(help="hidden widths of the head on more than two "
                                           "classes", factory=lambda: [512],
                                           flag="--head-hidden-multiclass")
    epochs: int = setting(SPECS["head"].epochs, "BNN-head epochs (quick: 40)",
                          flag="--head-epochs")
    lr: float = setting(SPECS["head"].lr, "BNN-head learning rate", flag="--head-lr")
    batch_size: int | None = setting(None, "BNN-head batch size (default: the phase-3 batch "
                                     "size)", flag="--head-batch-size")
    code_noise: float = setting(SPECS["head"].code_noise, "probability of flipping each code "
                                "bit in BNN-head training (0: off)", flag="--head-code-noise")

    def widths(self, num_classes: int) -> list[int]:
        """The hidden widths of a head on ``num_classes`` classes."""
        return self.hidden if num_classes == 2 else self.hidden_multiclass


@dataclass(frozen=True)
class CnnStage:
    """The baselines: binary and full-precision CNNs trained on the images."""

    epochs: int = setting(SPECS["bcnn"].epochs, "baseline CNN epochs (quick: 3)",
                          flag="--cnn-epochs")
    binary_lr: float = setting(SPECS["bcnn"].lr, "binary CNN learning rate")
    float_lr: float = setting(SPECS["fpcnn"].lr, "full-precision CNN learning rate")


@dataclass
class ReproduceConfig:
    data: str = setting(DEFAULT_DATA, "data source")
    tasks: list[str] = setting(help="tasks (default: the paper's five pairs and all ten "
                               "classes)", factory=lambda: [*PAPER_TASKS, "all"])
    seeds: list[int] = setting(help="seeds (default: 0 1 2; quick: 0)", factory=lambda: [0, 1, 2])
    vae: VaeStage = setting(factory=VaeStage)
    head: HeadStage = setting(factory=HeadStage)
    cnn: CnnStage = setting(factory=CnnStage)
    batch_size: int = setting(64, "batch size of phase 3")
    max_train: int | None = setting(None, "cap on training samples per task "
                                    "(default: all; quick: 1000)")
    device: str = setting("cpu", "torch device: cpu, cuda, cuda:1, ...")
    quick: bool = setting(False, "fewer epochs, samples and seeds (< 3 min)")
    encoder: str | None = setting(None, "reuse a pretrained encoder directory (skip phase 1)")
    continual: bool = setting(False, "also learn the pair tasks one after another with one "
                              "head (class-incremental, every strategy of `hybnn continual`) "
                              "and add its table: minutes more", negatable=True)

    def head_train_config(self, seed: int) -> TrainConfig:
        """How the BNN head trains in this run, with ``seed``."""
        batch = self.batch_size if self.head.batch_size is None else self.head.batch_size
        return TrainConfig(self.head.epochs, batch, self.head.lr,
                           code_noise=self.head.code_noise, seed=seed, device=self.device)

    def cnn_train_config(self, binary: bool, seed: int) -> TrainConfig:
        """How the binary (or the full-precision) baseline CNN trains, with ``seed``."""
        lr = self.cnn.binary_lr if binary else self.cnn.float_lr
        return TrainConfig(self.cnn.epochs, self.batch_size, lr, seed=seed, device=self.device)

    @classmethod
    def make(cls, quick: bool = False, **values: Any) -> ReproduceConfig:
        """The full run, or the ``--quick`` preset; ``values`` override either. Settings are
        named by their flags, underscores for dashes (``head_epochs=9``, ``bits=64``), in
        whichever group they live; ``None`` leaves a setting as it is."""
        preset = REPRODUCE_QUICK if quick else {}
        given = {**preset, **{k: v for k, v in values.items() if v is not None}, "quick": quick}
        try:
            return cast(ReproduceConfig, unflatten(cls, given))
        except DataError as exc:
            raise TypeError(str(exc)) from None


STUDY_MODELS = ("bcnn", "hybnn")
# What --quick changes in the ReBNN study (a few minutes).
STUDY_QUICK: dict[str, Any] = {
    "seeds": (0, 1), "train_size": 1500, "head_train_size": 5000, "test_size": 1000,
    "pretrain_size": 2000, "bcnn_epochs": 4, "head_epochs": 6, "pretrain_epochs": 2}


STUDY_NETS = ("cnn", "resnet18")
# Step 2's methods on the binary ResNet (hybnn.pipeline.config.RESNET_METHODS; reactnet is
# sign x mean |w|, the ReActNet baseline ReBNN is compared with)
RESNET_STUDY_METHODS = ("ste", "reactnet", "rebnn", "rebnn-const")
# What --quick changes in the ResNet study (a few minutes on 2 cores).
RESNET_STUDY_QUICK: dict[str, Any] = {"train_size": 600, "test_size": 300, "teacher_epochs": 2,
                                      "step1_epochs": 2, "epochs": 3}


@dataclass
class ResNetStudyConfig:
    """The binary ResNet-18 study (``--net resnet18``): per seed a step-1 model (binary
    activations, real weights), then step 2 with each method, without and with the float
    twin as teacher (trained once). The defaults finish in about 40 minutes on one core."""

    width: int = setting(8, "base channels (64 in the paper; 8 to fit a CPU)")
    train_size: int | None = setting(2000, "training subset (None: the whole split)")
    test_size: int | None = setting(1000, "test subset (None: the whole split)")
    teacher_epochs: int = setting(6, "epochs of the float twin")
    step1_epochs: int = setting(4, "epochs of step 1")
    epochs: int = setting(8, "epochs of step 2 (the flips are measured here)")
    batch_size: int = setting(64, "batch size")
    lr: float = setting(2e-3, "Adam learning rate of every run (linear decay)")
    schedule: str = setting("linear", "learning-rate schedule (ReActNet's and ReBNN's)")
    augment: str = setting("standard", "augmentation (random crop + flip)")
    teacher: tuple[bool, ...] = setting((False, True), "without and/or with distillation")
    amp: bool = setting(False, "bfloat16 autocast (CUDA)")


@dataclass
class StudyConfig:
    """Everything that defines a ReBNN study run (recorded in results.json)."""

    data: str = setting("fashion-mnist", "data source")
    methods: tuple[str, ...] = setting(METHODS, "training methods compared", cli=False)
    models: tuple[str, ...] = setting(STUDY_MODELS, "models compared", cli=False)
    seeds: tuple[int, ...] = setting((0, 1, 2), "seeds (quick: 0 1)")
    train_size: int | None = setting(3000, "bcnn training subset (None: whole split)",
                                     cli=False)
    head_train_size: int | None = setting(20000, "hybnn head training subset", cli=False)
    test_size: int | None = setting(5000, "test subset (None: the whole split)", cli=False)
    pretrain_size: int | None = setting(10000, "images the VAE is pretrained on", cli=False)
    bcnn_epochs: int = setting(8, "binary CNN epochs (quick: 4)")
    head_epochs: int = setting(25, "BNN-head epochs (quick: 6)")
    pretrain_epochs: int = setting(5, "VAE epochs (quick: 2)", cli=False)
    batch_size: int = setting(64, "batch size", cli=False)
    lr: float = setting(SPECS["bcnn"].lr, "learning rate of every binary run", cli=False)
    hidden: tuple[int, ...] = setting((128,), "BNN-head hidden widths", cli=False)
    latent_bits: int = setting(PretrainConfig.latent_bits, "latent bits", cli=False)
    device: str = setting("cpu", "torch device: cpu, cuda, cuda:1, ...")
    threads: int = setting(1, "torch CPU threads")
    subset_seed: int = setting(0, "seed of the subsets", cli=False)
    net: str = setting("cnn", "cnn: the binary CNN and the HyBNN head; resnet18: the binary "
                       "ResNet-18", choices=STUDY_NETS)
    resnet: ResNetStudyConfig = setting(help="the ResNet study (net resnet18)",
                                        factory=ResNetStudyConfig)

    @classmethod
    def make(cls, data: str = "fashion-mnist", quick: bool = False,
             seeds: list[int] | None = None, epochs: int | None = None,
             device: str = "cpu", threads: int = 1, net: str = "cnn",
             width: int | None = None, **resnet: Any) -> StudyConfig:
        """The default study, or a few-minute ``quick`` one; ``epochs`` overrides every
        trained BNN's (step 2's for ``net="resnet18"``); ``width`` and ``resnet`` set fields
        of :class:`ResNetStudyConfig`."""
        if net not in STUDY_NETS:
            raise DataError(f"--net must be {' or '.join(STUDY_NETS)}, got {net!r}")
        cfg = cls(data=data, device=device, threads=threads, net=net)
        if net == "resnet18":
            cfg.methods, cfg.models = RESNET_STUDY_METHODS, ("resnet18",)
            values = {**(RESNET_STUDY_QUICK if quick else {}), **resnet}
            if width is not None:
                values["width"] = width
            if epochs is not None:
                values["epochs"] = int(epochs)
            cfg.resnet = replace(cfg.resnet, **values)
            if quick:
                cfg.seeds = STUDY_QUICK["seeds"]
        elif width is not None or resnet:
            raise DataError("--width and the ResNet settings are for --net resnet18")
        elif quick:
            cfg = replace(cfg, **STUDY_QUICK)
        if seeds:
            cfg.seeds = tuple(seeds)
        if epochs is not None and net == "cnn":
            cfg.bcnn_epochs = cfg.head_epochs = int(epochs)
        return cfg
