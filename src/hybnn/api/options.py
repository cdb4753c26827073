"""What each ``hybnn`` command takes, as typed dataclasses (no torch import).

Every command of the CLI is one function of :mod:`hybnn.api` taking one of these; the CLI
builds its flags from their fields (:mod:`hybnn.cli.flags`), and a nested config dataclass
(``PretrainConfig``, ``TrainConfig``, ``ReproduceConfig``, ``FedConfig``) contributes its
own fields as flags. Defaults live in those fields, nowhere else; the range of every
numeric one lives in :data:`hybnn.pipeline.limits.LIMITS`, checked when an options object is
built.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from hybnn.binary.names import SCALINGS
from hybnn.data.names import PREPS, SPLITS
from hybnn.errors import DataError
from hybnn.experiments.config import DEFAULT_DATA, STUDY_NETS, ReproduceConfig, StudyConfig
from hybnn.experiments.continual_config import ContinualConfig
from hybnn.federated.config import SCHEMES, FedConfig
from hybnn.models.names import CODE_LAYER_NAMES, MODEL_NAMES, RESNET_NAMES, SPECS
from hybnn.pipeline.config import DistillConfig, PretrainConfig, ResNetConfig, TrainConfig
from hybnn.pipeline.limits import check_settings
from hybnn.settings import setting

ENGINES = ("torch", "packed")
EXPORT_FORMATS = ("engine", "c")
DEVICE_HELP = "torch device: cpu, cuda, cuda:1, ..."


class _Checked:
    """Options refuse a setting outside its range when they are built, before any work:
    the nested config's own checks first (its ``validate``), then every limit, then that
    every file they read exists (:attr:`READS`; an ``encoder`` may name one shipped in the
    package, replaced here by its directory) and a built-in source's ``task`` is one of
    its tasks. All of it without torch, so a mistyped path fails at once."""

    READS: ClassVar[dict[str, str]] = {}  # field -> what it names, for "X not found: PATH"

    def __post_init__(self) -> None:
        validate = getattr(getattr(self, "config", None), "validate", None)
        if validate is not None:
            validate()
        check_settings(self)
        for name, what in self.READS.items():
            value = getattr(self, name)
            if name == "encoder" and value is not None:
                from hybnn.encoders import resolve  # no torch: a shipped name, e.g. general

                value = str(resolve(value))
                setattr(self, name, value)
            for path in value if isinstance(value, list) else [value]:
                if path is not None and not Path(path).exists():
                    raise DataError(f"{what} not found: {path}")
        task, data = getattr(self, "task", None), getattr(self, "data", None)
        if isinstance(task, str) and isinstance(data, str):
            check_builtin_task(task, data)


def check_builtin_task(task: str, data: str) -> None:
    """Refuse a task a built-in source does not have (other sources: when loaded)."""
    from hybnn.data.labels import SOURCE_NAMES
    from hybnn.data.task_spec import task_classes

    names = SOURCE_NAMES.get(data)
    if names is not None:
        task_classes(task, len(names), names)


@dataclass(kw_only=True)
class PretrainOptions(_Checked):
    """Phase 1: train the binary-latent VAE on the general data, freeze and save it."""

    data: str = setting(DEFAULT_DATA, "data source")
    out: str = setting("runs/encoder", "encoder directory to write")
    resume: bool = setting(False, "continue from out/checkpoint.pt (after an interrupt)")
    config: PretrainConfig = setting(factory=PretrainConfig)
    progress: bool = setting(True, "progress bars on a terminal, a line per step in a log")


@dataclass(kw_only=True)
class DistillOptions(_Checked):
    """Distil a fully binary encoder from a frozen VAE, label-free, on the general data."""

    READS: ClassVar[dict[str, str]] = {"encoder": "encoder artifact",
                                       "student_init": "--student-init model"}

    encoder: str = setting(help="VAE encoder directory from `hybnn pretrain` (the teacher)")
    out: str = setting("runs/binary-encoder", "binary encoder directory to write")
    data: str = setting(DEFAULT_DATA, "data source: trains on its training split (labels "
                        "unused), reports bit agreement on its test split")
    resume: bool = setting(False, "continue from out/checkpoint.pt (after an interrupt)")
    config: DistillConfig = setting(factory=DistillConfig)
    student_init: str | None = setting(None, "--student resnet18: start from this `hybnn "
                                       "train --model resnet18` directory (e.g. ReBNN step "
                                       "2), its classifier replaced", metavar="DIR")
    progress: bool = setting(True, "progress bars on a terminal, a line per step in a log")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.student_init is not None and self.config.student != "resnet18":
            raise DataError("--student-init starts the resnet18 student: add --student "
                            "resnet18")


@dataclass(kw_only=True)
class QuantizeOptions(_Checked):
    """The frozen VAE's encoder as a static int8 ONNX graph, for int8 codes in training and
    deployment: `hybnn extract --encoder OUT` trains on the codes the int8 bundle computes."""

    READS: ClassVar[dict[str, str]] = {"encoder": "encoder artifact"}

    encoder: str = setting(help="VAE encoder directory from `hybnn pretrain`")
    out: str = setting("runs/encoder-int8", "int8 encoder directory to write")
    calibration_samples: int = setting(512, "calibration images, a seeded sample of the "
                                       "encoder's own training data (labels unused)")
    calibration_seed: int = setting(0, "seed of the calibration sample")
    calibration_data: str | None = setting(None, "data source the calibration sample is "
                                           "drawn from (default: the encoder's training "
                                           "data, as it records it)")
    agreement_samples: int = setting(1024, "test images of the encoder's data on which the "
                                     "share of bits equal to float32's is measured (0: skip)")
    threads: int = setting(1, "ONNX Runtime threads")


@dataclass(kw_only=True)
class RecodeOptions(_Checked):
    """A trained VAE encoder whose codes come from another of its layers (no training): the
    paper's latent, or the sign of a conv block's batch-normed map (on 28 x 28 images conv3
    gives 2,048 bits, conv2 3,136): wider codes that hold more of the image."""

    READS: ClassVar[dict[str, str]] = {"encoder": "encoder artifact"}

    encoder: str = setting(help="VAE encoder directory from `hybnn pretrain`")
    code: str = setting("conv2", "layer the codes come from", choices=CODE_LAYER_NAMES)
    out: str = setting("runs/encoder-conv2", "encoder directory to write")


@dataclass(kw_only=True)
class ExtractOptions(_Checked):
    """Phase 2: encode a task's split into a packed code store (25 B a sample at 200 bits)."""

    READS: ClassVar[dict[str, str]] = {"encoder": "encoder artifact"}

    encoder: str = setting(help="encoder directory from `hybnn pretrain`, `hybnn recode`, "
                           "`hybnn distill` or `hybnn quantize` (int8 codes, computed by ONNX "
                           "Runtime)")
    out: str = setting(help="code store file to write (.safetensors)")
    data: str | None = setting(None, "data source (default: the encoder's training data, "
                               "as it records it)")
    task: str = setting("all", "all, a pair such as 0v1, or classes such as 0,2,7 or by name")
    split: str = setting("train", "split to encode", choices=SPLITS)
    device: str = setting("cpu", DEVICE_HELP)


@dataclass(kw_only=True)
class TrainOptions(_Checked):
    """Phase 3: the BNN head on codes (``hybnn``), a CNN baseline on images, or the binary
    ResNet-18 and its float twin on images."""

    READS: ClassVar[dict[str, str]] = {"codes": "code store", "test_codes": "code store",
                                       "start": "step-1 model", "teacher": "teacher model"}

    out: str = setting(help="model directory to write")
    model: str = setting("head", "head: BNN head on codes; bcnn / fpcnn: CNN on images; "
                         "resnet18: binary ResNet-18 (ReActNet blocks), resnet18-float: its "
                         "float twin", choices=MODEL_NAMES)
    codes: str | None = setting(None, "training code store (hybnn)")
    test_codes: str | None = setting(None, "code store evaluated every epoch (hybnn)")
    hidden: list[int] | None = setting(None, "hidden widths of the BNN head (default: 128 for "
                                       "two classes, 512 for more)")
    data: str = setting(DEFAULT_DATA, "data source (CNNs and ResNets; ResNets also take "
                        "cifar10:DIR and folder:DIR, an image folder streamed from disk)")
    task: str | None = setting(None, "task (default: 0v1 for bcnn and fpcnn, all for the "
                               "ResNets)")
    prep: str = setting("centered", "input preparation for CNNs: unit = paper setting, "
                        "centered = fair", choices=PREPS)
    scaling: str = setting("none", "scaling factors of the binary weights", choices=SCALINGS)
    resume: bool = setting(False, "continue from out/checkpoint.pt")
    epochs: int | None = setting(None, "training epochs (default: " + ", ".join(
        f"{s.epochs} {s.name}" for s in SPECS.values()) + ")")
    lr: float | None = setting(None, "Adam learning rate (default: " + ", ".join(
        f"{s.lr:g} {s.name}" for s in SPECS.values()) + ")")
    code_noise: float | None = setting(None, "flip each code bit with this probability in "
                                       "training, like dropout (codes only; default: "
                                       f"{SPECS['head'].code_noise:g} head, 0 for CNNs)")
    config: TrainConfig = setting(factory=TrainConfig)
    resnet: ResNetConfig = setting(factory=ResNetConfig)
    start: str | None = setting(None, "resnet18 --step 2: the step-1 model directory its "
                                "weights start from", flag="--from", metavar="STEP1_DIR")
    teacher: str | None = setting(None, "ResNets: distil from this resnet18-float model "
                                  "(KL of the output distributions, ReActNet's loss)",
                                  metavar="DIR")
    progress: bool = setting(True, "progress bars on a terminal, a line per step in a log")

    def __post_init__(self) -> None:
        default = TrainConfig()
        for name in ("epochs", "lr", "code_noise"):  # each model has its own default
            if getattr(self.config, name) != getattr(default, name):
                raise DataError(f"set {name} on TrainOptions (its default depends on the "
                                f"model), not on its config")
        self.resnet.validate()
        if self.model not in RESNET_NAMES and (self.resnet.step or self.start or self.teacher):
            raise DataError("--step, --from and --teacher train the ResNets (--model "
                            f"{' or '.join(RESNET_NAMES)})")
        if self.resnet.step == 2 and not self.start:
            raise DataError("--step 2 binarizes the weights of a step-1 model: give --from "
                            "STEP1_DIR (from `hybnn train --model resnet18 --step 1`)")
        super().__post_init__()


@dataclass(kw_only=True)
class EvaluateOptions(_Checked):
    """Accuracy and loss of a saved model on codes or on a data split."""

    READS: ClassVar[dict[str, str]] = {"model": "model", "codes": "code store",
                                       "encoder": "encoder artifact"}

    model: str = setting(help="model directory")
    codes: str | None = setting(None, "code store to evaluate a BNN head on")
    encoder: str | None = setting(None, "encoder directory (a BNN head evaluated on images)")
    data: str | None = setting(None, "data source (default: the model's)")
    task: str | None = setting(None, "task (default: the model's)")
    split: str = setting("test", "split", choices=SPLITS)
    out: str | None = setting(None, "directory for the confusion-matrix PNG "
                              "(default: beside the model)")
    json: bool = setting(False, "print the result as JSON")
    device: str = setting("cpu", DEVICE_HELP)


@dataclass(kw_only=True)
class PredictOptions(_Checked):
    """Classify PNG/JPEG images or ``.npy``/``.npz`` arrays with a saved model."""

    READS: ClassVar[dict[str, str]] = {"model": "model", "encoder": "encoder artifact",
                                       "inputs": "input"}

    inputs: list[str] = setting(help="PNG/JPEG images, .npy arrays or .npz (x)",
                                factory=list, positional=True)
    model: str = setting(help="model directory, or a bundle file from `hybnn export "
                         "--encoder` (runs without torch)")
    encoder: str | None = setting(None, "encoder directory (needed for a BNN head)")
    engine: str = setting("torch", "torch, or the packed XNOR/popcount engine",
                          choices=ENGINES)
    json: bool = setting(False, "print predictions as JSON")
    device: str = setting("cpu", DEVICE_HELP)


@dataclass(kw_only=True)
class ExportOptions(_Checked):
    """Write a BNN head or binary CNN as a packed engine file or as C99 source (``--format
    c``), or a head with its encoder as one deployable bundle (``--encoder``)."""

    READS: ClassVar[dict[str, str]] = {"model": "model", "encoder": "encoder artifact"}

    model: str = setting(help="model directory (from `hybnn train`)", positional=True)
    out: str = setting(help="engine file to write (with --encoder: a bundle file; with "
                       "--format c: a directory)")
    format: str = setting("engine", "engine: a packed engine file; c: C99 source NAME.h + "
                          "NAME.c for microcontrollers", choices=EXPORT_FORMATS)
    name: str = setting("hybnn_model", "C identifier prefix of the generated code (--format c)")
    encoder: str | None = setting(None, "encoder directory: a VAE encoder gives a bundle "
                                  "(encoder as ONNX + packed head) that runs without torch; a "
                                  "binary encoder (`hybnn distill`) one fully binary engine "
                                  "network")
    int8: bool = setting(False, "bundle: int8 encoder, ONNX Runtime static quantization "
                         "calibrated on the encoder's own training data")
    calibration_samples: int = setting(512, "bundle --int8: calibration images")
    calibration_seed: int = setting(0, "bundle --int8: seed of the calibration sample")
    calibration_data: str | None = setting(None, "bundle --int8: data source of the "
                                           "calibration sample (default: the encoder's "
                                           "training data, as it records it)")


@dataclass(kw_only=True)
class SummaryOptions(_Checked):
    """Binary vs float parameters per layer and deployed bytes."""

    READS: ClassVar[dict[str, str]] = {"model": "model"}

    model: str = setting(help="model directory", positional=True)


@dataclass(kw_only=True)
class ReproduceOptions(_Checked):
    """The paper's whole experiment with honest baselines (the main job)."""

    out: str = setting("runs/reproduce", "output directory")
    resume: bool = setting(False, "keep what an interrupted run in --out finished, "
                           "continue the rest from its checkpoints")
    config: ReproduceConfig = setting(factory=ReproduceConfig)
    progress: bool = setting(True, "progress bars on a terminal, a line per step in a log")


@dataclass(kw_only=True)
class ContinualOptions(_Checked):
    """Continual learning: the pair tasks arrive in order and one BNN head learns them."""

    out: str = setting("runs/continual", "output directory")
    config: ContinualConfig = setting(factory=ContinualConfig)
    progress: bool = setting(True, "progress bars on a terminal, a line per step in a log")


@dataclass(kw_only=True)
class FederateOptions(_Checked):
    """FedHyBNN on Flower: a simulation here, or ``deploy`` with real processes."""

    out: str = setting("runs/federate", "output directory")
    config: FedConfig = setting(factory=FedConfig)
    engine: str = setting("ray", "simulation engine: ray (Flower's simulation engine) or "
                          "local (the same apps in this process, sequential, no Ray: for "
                          "many runs or many clients)", choices=("ray", "local"))
    deploy: bool = setting(False, "run a real deployment: flower-superlink, --clients "
                           "flower-supernode processes and `flwr run` on 127.0.0.1")
    insecure: bool = setting(False, "--deploy without TLS and SuperNode authentication "
                             "(not recommended: anyone on this host can join or listen)")
    server_address: str | None = setting(None, "--deploy: the SuperLink listens on HOST (an "
                                         "IP address or DNS name of this machine, in its "
                                         "certificate) and PORT (default: 127.0.0.1, a "
                                         "free port); nodes and flwr connect there",
                                         metavar="HOST[:PORT]")
    certificates: str | None = setting(None, "--deploy with this directory's ca.crt, "
                                       "server.pem (its SAN naming the server address) and "
                                       "server.key, e.g. from `hybnn pki` (default: a new "
                                       "CA in OUT/deployment/pki)", metavar="DIR")
    supernode_keys: str | None = setting(None, "--deploy with this directory's SuperNode "
                                         "key pairs supernode-<i>, supernode-<i>.pub (EC "
                                         "P-384, OpenSSH; default: new ones)", metavar="DIR")
    node_data: list[str] | None = setting(None, "each node's own data file, one node per "
                                          "file (any format --data takes, or a folder with "
                                          "a subfolder of images per class): the nodes "
                                          "train on these alone and the server holds none "
                                          "(needs --encoder)", metavar="FILE")
    node_files: bool = setting(False, "write the partition of --data as one data file per "
                               "node into OUT/nodes (as `hybnn partition` does) and run the "
                               "federation on them: each node reads only its own file, in "
                               "simulation as in --deploy (needs --encoder)")
    pretrain_epochs: int = setting(PretrainConfig.epochs,
                                   "VAE epochs when no --encoder is given")
    centralized: bool = setting(True, "the centralized reference run")
    progress: bool = setting(True, "progress bars on a terminal, a line per step in a log")


@dataclass(kw_only=True)
class PkiOptions(_Checked):
    """Certificates and keys for a FedHyBNN deployment over several machines: a CA, the
    SuperLink's certificate and key, and one key pair per SuperNode, in a new directory."""

    out: str = setting(help="new directory to write (mode 0700; refused if not empty)")
    server_name: list[str] = setting(help="IP address or DNS name the SuperNodes reach the "
                                     "SuperLink at (one or more, repeatable)",
                                     factory=list, metavar="NAME")
    nodes: int = setting(FedConfig.clients, "SuperNode key pairs to make, one per machine "
                         "that will run a SuperNode")


@dataclass(kw_only=True)
class PartitionOptions(_Checked):
    """A federation's partition of a data set written as one data file per node (and the
    test split as the server's test file), for machines that each keep only their own."""

    out: str = setting(help="new directory to write (refused if not empty)")
    data: str = setting(FedConfig.data, "data source")
    task: str = setting(FedConfig.task, "task: a pair like 0v1, all, or a class list")
    clients: int = setting(FedConfig.clients, "nodes: one file each")
    partition: str = setting(FedConfig.partition, "iid, dirichlet (see --alpha) or classes "
                             "(see --classes-per-client)", choices=SCHEMES)
    alpha: float = setting(FedConfig.alpha, "Dirichlet alpha (smaller: more skewed)")
    classes_per_client: int = setting(FedConfig.classes_per_client,
                                      "classes per node (--partition classes)")
    seed: int = setting(FedConfig.seed, "random seed of the partition")

    def fed_config(self) -> FedConfig:
        """The federation settings whose partition this writes (checked as FedConfig's)."""
        return FedConfig(data=self.data, task=self.task, clients=self.clients,
                         partition=self.partition, alpha=self.alpha,
                         classes_per_client=self.classes_per_client, seed=self.seed)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.fed_config()


@dataclass(kw_only=True)
class StudyOptions(_Checked):
    """ReBNN vs STE vs XNOR (vs ReActNet on the ResNet): accuracy and weight oscillation."""

    out: str = setting("runs/study-rebnn", "output directory")
    data: str = setting(StudyConfig.data, "data source")
    net: str = setting(StudyConfig.net, "cnn: the binary CNN and the HyBNN head; resnet18: "
                       "the binary ResNet-18, two steps, without and with a float teacher",
                       choices=STUDY_NETS)
    width: int | None = setting(None, "--net resnet18: base channels (default 8; 64 in "
                                "the paper)")
    quick: bool = setting(False, "small subsets, few epochs, 2 seeds")
    seeds: list[int] | None = setting(None, "seeds (default: 0 1 2)")
    epochs: int | None = setting(None, "epochs of every BNN run (default: 8 bcnn, 25 head; "
                                 "resnet18: 8 of step 2)")
    device: str = setting(StudyConfig.device, DEVICE_HELP)
    threads: int = setting(StudyConfig.threads, "torch CPU threads")
    progress: bool = setting(True, "progress bars on a terminal, a line per step in a log")

    def study_config(self) -> StudyConfig:
        return StudyConfig.make(data=self.data, quick=self.quick, seeds=self.seeds,
                                epochs=self.epochs, device=self.device, threads=self.threads,
                                net=self.net, width=self.width)
