"""The library behind every ``hybnn`` command: one function per command, options in, results out.

Nothing here parses arguments or prints; :mod:`hybnn.cli` does both around these calls.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hybnn.api.options import (
    ContinualOptions,
    DistillOptions,
    EvaluateOptions,
    ExportOptions,
    ExtractOptions,
    FederateOptions,
    PredictOptions,
    PretrainOptions,
    QuantizeOptions,
    RecodeOptions,
    ReproduceOptions,
    StudyOptions,
    SummaryOptions,
    TrainOptions,
)
from hybnn.artifacts import declared_kind
from hybnn.data import BUILTIN_SOURCES, load_source, load_split, prepare, read_inputs, train_test
from hybnn.data.dataset import images_sha256
from hybnn.data.folder import (
    absolute_spec,
    folder_label_space,
    folder_path,
    is_image_folder,
    list_images,
)
from hybnn.data.labels import LabelSpace
from hybnn.data.names import ARRAYS_SOURCE, FOLDER_PREFIX
from hybnn.encoders import (
    ENCODE_BATCH,
    CodeEncoder,
    EncoderIdentity,
    open_encoder,
    require_same_encoder,
)
from hybnn.encoders import distilled as distilled_encoder
from hybnn.encoders import vae as vae_encoder
from hybnn.encoders.distilled import DistilledEncoder
from hybnn.encoders.int8 import Int8Graph
from hybnn.encoders.vae import VaeEncoder
from hybnn.errors import ArtifactError, CredentialError, DataError, HybnnWarning
from hybnn.federated.config import FedConfig
from hybnn.federated.node_files import NodeFiles
from hybnn.hooks import History
from hybnn.models.io import load_classifier, load_model
from hybnn.models.names import RESNET_NAMES, default_head_hidden
from hybnn.pipeline.codes import CodeStore, bits_to_signs
from hybnn.pipeline.config import TrainConfig
from hybnn.pipeline.extract import encode_to_codes
from hybnn.pipeline.fit import train_head, train_image_model
from hybnn.pipeline.limits import check_head
from hybnn.pipeline.metrics import confusion_matrix, per_class
from hybnn.pipeline.pretrain import pretrain as pretrain_encoder
from hybnn.pipeline.train import evaluate_classifier, predict_classes, resolve_device
from hybnn.plots import plot_confusion


def pretrain(opts: PretrainOptions) -> VaeEncoder:
    """Phase 1 on the *general* data: the training split of every class, labels unused."""
    opts.config.validate()
    general = load_split(opts.data, "all", "train")
    info = {"source": opts.data, "split": "train", "samples": len(general),
            "sha256": images_sha256(general.x)}
    return pretrain_encoder(general.x, opts.out, opts.config, info, progress=opts.progress,
                            resume=opts.resume)


def distill(opts: DistillOptions) -> DistilledEncoder:
    """A binary encoder distilled from a frozen VAE on the general data, labels unused: the
    fully binary cnn student, or the binary ResNet-18 (``config.student``)."""
    from hybnn.pipeline.distill import distill as distill_encoder

    resolve_device(opts.config.device)
    teacher = _vae(opts.encoder, opts.config.device)
    general, held_out = train_test(load_source(opts.data))  # every class; labels unused
    info = {"source": opts.data, "split": "train", "samples": len(general),
            "agreement_split": "test"}
    return distill_encoder(teacher, general.x, opts.out, opts.config, info, held_out.x,
                           progress=opts.progress, teacher_path=str(opts.encoder),
                           resume=opts.resume, student_init=opts.student_init)


def quantize(opts: QuantizeOptions) -> Int8Graph:
    """The VAE encoder in ``opts.encoder`` as an int8-encoder artifact in ``opts.out``
    (:mod:`hybnn.encoders.int8`), with the share of its bits equal to float32's on a
    seeded sample of the encoder's test data recorded as ``bit_agreement``."""
    from hybnn.bundle.encoder_graph import calibration_images, encoder_graph
    from hybnn.encoders import int8
    from hybnn.onnxgraph import INPUT_NAME, OUTPUT_NAME
    from hybnn.onnxgraph.session import OnnxEncoder

    encoder = _vae(opts.encoder)
    ident = EncoderIdentity.of(encoder)
    graph = encoder_graph(encoder, True, opts.calibration_samples, opts.calibration_seed,
                          calibration_data=opts.calibration_data)
    agreement = None
    if opts.agreement_samples:
        x, sample = calibration_images(encoder, opts.agreement_samples, opts.calibration_seed,
                                       data_source=opts.calibration_data,
                                       split="test")
        session = OnnxEncoder(graph.onnx, INPUT_NAME, OUTPUT_NAME, (ident.channels,
                              *ident.image_size), ident.latent_bits, opts.threads,
                              f"int8 graph of {opts.encoder}")
        same = float(np.mean(session.codes(x, ENCODE_BATCH) == encoder.encode(x)))
        agreement = {"source": sample["source"], "split": "test", "images": sample["size"],
                     "seed": opts.calibration_seed, "equal_bits": same}
    return int8.save(opts.out, graph, ident, {
        "bit_agreement": agreement, "encoder_dir": str(opts.encoder)})


def recode(opts: RecodeOptions) -> VaeEncoder:
    """The VAE encoder in ``opts.encoder`` with its codes from layer ``opts.code``, as a new
    encoder artifact in ``opts.out`` (same weights, its own fingerprint)."""
    return vae_encoder.recode(_vae(opts.encoder), opts.code, opts.out)


def _vae(directory: str, device: str = "cpu") -> VaeEncoder:
    """The VAE encoder in ``directory`` (distilling, quantizing and recoding start from it)."""
    encoder = open_encoder(directory, device, kinds=[vae_encoder.KIND])
    assert isinstance(encoder, VaeEncoder)
    return encoder


def extract(opts: ExtractOptions) -> CodeStore:
    """Phase 2: encode one split of one task with a frozen encoder (the VAE, a distilled
    binary encoder or an int8 encoder); saved to ``opts.out``."""
    resolve_device(opts.device)
    encoder = open_encoder(opts.encoder, opts.device)
    data = data_of(opts.data, _recorded_source(encoder.meta.get("data")),
                   f"encoder {opts.encoder}")
    part = load_split(data, opts.task, opts.split)
    store = encode_to_codes(encoder, part, {"task": opts.task, "split": opts.split})
    store.save(opts.out)
    return store


def train(opts: TrainOptions) -> tuple[nn.Module, History]:
    """Phase 3: the BNN head on code stores, or a baseline CNN on a task's images."""
    values = {k: v for k, v in dataclasses.asdict(opts.config).items()
              if k not in ("epochs", "lr", "code_noise")}
    config = TrainConfig.for_model(opts.model, opts.epochs, opts.lr, opts.code_noise,
                                   **values).validate()
    if opts.model == "head":
        if not opts.codes:
            raise DataError("--model head trains on codes: give --codes (from `hybnn extract`)")
        train_codes = CodeStore.load(opts.codes)
        test_codes = CodeStore.load(opts.test_codes) if opts.test_codes else None
        hidden = opts.hidden or default_head_hidden(train_codes.num_classes)
        check_head(hidden, "--hidden", train_codes.num_bits, train_codes.num_classes)
        return train_head(train_codes, test_codes, config, hidden, opts.scaling, opts.out,
                          opts.resume, progress=opts.progress)
    if opts.model in RESNET_NAMES:
        return _train_resnet(opts, config)
    task = opts.task or "0v1"
    train_set = load_split(opts.data, task, "train")
    test_set = load_split(opts.data, task, "test")
    return train_image_model(opts.model, train_set, test_set, opts.prep, config, opts.scaling,
                             opts.out, opts.resume, progress=opts.progress,
                             extra={"task": task})


def _train_resnet(opts: TrainOptions, config: TrainConfig) -> tuple[nn.Module, History]:
    """The binary ResNet-18 or its float twin, on in-memory images or a streamed folder."""
    from hybnn.data.folder import folder_splits
    from hybnn.pipeline.resnet import StreamedImages, TensorImages, train_resnet

    task = opts.task or "all"
    rcfg = opts.resnet
    train_set: TensorImages | StreamedImages
    test_set: TensorImages | StreamedImages
    if opts.data.startswith(FOLDER_PREFIX):
        size = rcfg.image_size or (224 if rcfg.stem == "imagenet" else 32)
        tr, te = folder_splits(opts.data, task)
        train_set = StreamedImages(tr, size, opts.prep, rcfg.workers)
        test_set = StreamedImages(te, size, opts.prep, rcfg.workers)
    else:
        if rcfg.image_size is not None:
            raise DataError("--image-size resizes the images of a folder: data; "
                            f"{opts.data} is used at its own size")
        train_set = TensorImages.of(load_split(opts.data, task, "train"), opts.prep)
        test_set = TensorImages.of(load_split(opts.data, task, "test"), opts.prep)
    return train_resnet(opts.model, train_set, test_set, opts.prep, config, rcfg, opts.out,
                        opts.resume, opts.start, opts.teacher, opts.progress,
                        extra={"task": task})


def evaluate(opts: EvaluateOptions) -> dict[str, Any]:
    """Accuracy and loss of a saved model on a code store or on a data split."""
    device = resolve_device(opts.device)
    model, meta = load_classifier(opts.model)
    arch = meta["config"]["arch"]
    task = opts.task or meta.get("task") or "all"
    data = data_of(opts.data, meta.get("source"), f"model {opts.model}", required=False)
    if arch == "head":
        if opts.codes:
            store = CodeStore.load(opts.codes)
            store.require_encoder(str(meta.get("encoder_fingerprint")), f"model {opts.model}")
        else:
            if not (opts.encoder and data):
                raise DataError("a BNN head is evaluated on --codes, or on --data with --encoder")
            enc = _matching_encoder(opts.encoder, meta, opts.model, opts.device)
            store = encode_to_codes(enc, load_split(data, task, opts.split))
        x, y = store.tensors()
    else:
        if not data:
            raise DataError("give --data: the model does not record its data source")
        part = load_split(data, task, opts.split)
        _check_channels(meta, part.x, opts.model)
        x = torch.from_numpy(prepare(part.x, meta.get("prep") or "unit"))
        y = torch.from_numpy(part.y)
    if len(y) == 0:
        raise DataError(f"nothing to evaluate: the {opts.split} split of task {task} has no "
                        "samples")
    classes = int(meta["config"]["arch_config"]["num_classes"])
    if int(y.max()) >= classes:
        raise DataError(f"labels go up to {int(y.max())}, but model {opts.model} has {classes} "
                        f"classes (trained on task {meta.get('task')}); evaluate it on its own "
                        "task with --task")
    loss, acc = evaluate_classifier(model.to(device), x, y)
    space = model_labels(meta, model)
    matrix = confusion_matrix(y.numpy(), predict_classes(model, x), len(space))
    png = Path(opts.out or opts.model) / f"confusion-{task}-{opts.split}.png"
    plot_confusion(matrix, space.names, png,
                   f"{meta.get('source', data)} {task} ({opts.split}), {arch}: "
                   f"accuracy {100 * acc:.2f} % on {len(y)} samples")
    return {"model": str(opts.model), "arch": arch, "task": task, "split": opts.split,
            "samples": len(y), "accuracy": acc, "loss": loss,
            "per_class": per_class(matrix, space), "confusion": matrix.tolist(),
            "confusion_png": str(png)}


def predict(opts: PredictOptions) -> list[dict[str, Any]]:
    """Classify images or arrays with a saved model (torch or the packed engine)."""
    device = resolve_device(opts.device)
    model, meta = load_classifier(opts.model)
    arch = meta["config"]["arch"]
    x, names = read_inputs(opts.inputs)
    if arch == "head":
        if not opts.encoder:
            raise DataError("a BNN head classifies images through its encoder: give --encoder")
        enc = _matching_encoder(opts.encoder, meta, opts.model, opts.device)
        net_input = bits_to_signs(enc.encode(x)).numpy()
    else:
        _check_channels(meta, x, opts.model)
        net_input = prepare(x, meta.get("prep") or "unit")
    if opts.engine == "packed":
        logits = _packed_logits(model, net_input)
    elif opts.engine == "torch":
        with torch.no_grad():
            logits = model.to(device)(torch.from_numpy(net_input).to(device)).cpu().numpy()
    else:
        raise DataError(f"unknown engine {opts.engine!r}: use torch or packed")
    logits = np.asarray(logits, dtype=np.float32)
    if not np.isfinite(logits).all():
        raise ArtifactError(f"model {opts.model} gives non-finite outputs for these inputs "
                            "(weights too large to compute with)")
    probs = torch.softmax(torch.from_numpy(logits), 1).numpy()
    space = model_labels(meta, model)
    return [{"input": n, "index": int(p.argmax()), "label": space.labels[int(p.argmax())],
             "name": space.names[int(p.argmax())], "probability": float(p.max())}
            for n, p in zip(names, probs, strict=True)]


def export(opts: ExportOptions) -> dict[str, Any]:
    """Write a trained BNN head or binary CNN as a packed engine file; returns its header.

    ``format="c"``: C99 source into the directory ``opts.out`` instead; returns its summary
    (:func:`hybnn.engine.c_export.write_c`). With ``encoder``: a VAE encoder gives a
    deployable bundle (:func:`hybnn.bundle.export.export_bundle`); a binary encoder (from
    `hybnn distill`) gives one fully binary network, images in, logits out."""
    from hybnn.engine.export import export_artifact, export_fully_binary

    binary_encoder = opts.encoder is not None and (
        declared_kind(opts.encoder) == distilled_encoder.KIND)
    if opts.format == "engine":  # checked again at the write; here before the slow part
        from hybnn.engine.format import require_replaceable

        require_replaceable(opts.out, "bundle" if opts.encoder and not binary_encoder
                            else "engine file")
    if opts.encoder and not binary_encoder:
        if opts.format != "engine":
            raise DataError("--format c exports the packed part of a model alone; drop "
                            "--encoder (a bundle's encoder runs in ONNX Runtime)")
        from hybnn.bundle.export import export_bundle

        return export_bundle(opts.model, opts.encoder, opts.out, opts.int8,
                             opts.calibration_samples, opts.calibration_seed,
                             opts.calibration_data)
    if opts.int8:
        raise DataError("--int8 quantizes a bundle's VAE encoder: give --encoder VAE_DIR")
    try:
        if binary_encoder and opts.format == "engine":
            return export_fully_binary(opts.model, str(opts.encoder), opts.out)
        if binary_encoder:
            raise DataError("--format c of a fully binary network: export it as an engine "
                            "file first, then `hybnn export` that file with --format c")
        if opts.format == "c":
            from hybnn.engine.c_export import write_c

            return write_c(opts.model, opts.out, opts.name)
        return export_artifact(opts.model, opts.out)
    except (TypeError, ValueError) as exc:  # an architecture or layer the engine cannot run
        raise ArtifactError(f"cannot export {opts.model}: {exc}") from None


def summary(opts: SummaryOptions) -> str:
    """A larq-style table: binary vs float parameters per layer and deployed bytes."""
    from hybnn.binary.summary import summary_table

    model, _ = load_model(opts.model)
    return summary_table(model)


def reproduce(opts: ReproduceOptions) -> dict[str, Any]:
    """The paper's whole experiment with honest baselines; writes into ``opts.out``."""
    from hybnn.experiments.reproduce import reproduce as run

    return run(opts.config, opts.out, progress=opts.progress, resume=opts.resume)


def continual(opts: ContinualOptions) -> dict[str, Any]:
    """The pair tasks learned one after another by one head; writes into ``opts.out``."""
    from hybnn.experiments.continual import continual as run

    resolve_device(opts.config.device)
    return run(opts.config, opts.out, progress=opts.progress)


def federate(opts: FederateOptions) -> dict[str, Any]:
    """FedHyBNN on Flower, in simulation or (``deploy``) as real local processes."""
    cfg = opts.config
    files = [absolute_spec(f) for f in opts.node_data or []]
    written = written_node_files(cfg, Path(opts.out), files) if opts.node_files else None
    if written:
        files = [str(p) for p in written.nodes]
        cfg = cfg.with_group("local_data", server_test=str(written.server_test),
                             labels=",".join(map(str, written.labels)))
    if files:
        cfg = node_data_config(cfg, files)
    cfg = cfg.with_(min_clients=min(cfg.min_clients, cfg.clients))
    resolve_device(cfg.device)
    # with node data no one holds the pooled data, unless this launcher wrote the files
    centralized = opts.centralized and (not files or written is not None)
    if opts.deploy:
        from hybnn.federated.deploy import deploy

        return deploy(cfg, opts.out, pretrain_epochs=opts.pretrain_epochs,
                      centralized=centralized, insecure=opts.insecure,
                      certificates=opts.certificates, supernode_keys=opts.supernode_keys,
                      server_address=opts.server_address, node_data=files)
    if opts.insecure or opts.certificates or opts.supernode_keys or opts.server_address:
        raise CredentialError("--insecure, --certificates, --supernode-keys and "
                              "--server-address apply to --deploy only (a simulation starts "
                              "no SuperLink)")
    from hybnn.federated.simulation import federate as simulate

    return simulate(cfg, opts.out, pretrain_epochs=opts.pretrain_epochs,
                    centralized=centralized, engine=opts.engine, node_data=files)


def written_node_files(cfg: FedConfig, out: Path, given: list[str]) -> NodeFiles:
    """``--node-files``: ``cfg``'s partition written into ``out/nodes`` (an earlier run's
    node files there are replaced; anything else there is refused)."""
    from hybnn.federated.node_files import MANIFEST, SERVER_TEST, write_node_files

    if given:
        raise DataError("--node-files writes the node files from --data; --node-data names "
                        "files that exist: give one of them")
    if not cfg.encoder:
        raise DataError("--node-files needs --encoder: every node holds the same frozen "
                        "encoder")
    target = out / "nodes"
    if target.is_dir():
        names = {p.name for p in target.iterdir()}
        ours = {MANIFEST, SERVER_TEST} | {n for n in names
                                           if n.startswith("node-") and n.endswith(".npz")}
        if names and (MANIFEST not in names or not names <= ours):
            raise DataError(f"{target} holds files that --node-files did not write: move "
                            "them, or choose another --out")
        shutil.rmtree(target)
    return write_node_files(cfg, target)


def node_data_config(cfg: FedConfig, files: list[str]) -> FedConfig:
    """``cfg`` for a federation whose node i trains on ``files[i]`` alone: one client per
    file, the label space every file's labels (unless ``cfg.local_data.labels`` names it)."""
    if not cfg.encoder:
        raise DataError("--node-data needs --encoder: the server holds no data to pretrain "
                        "one on; copy the same frozen encoder to every node")
    for f in files:
        if not folder_path(f).exists():
            raise DataError(f"node data file not found: {f}")
    labels = cfg.local_data.labels
    if cfg.local_data.label_names and not labels:
        raise DataError("--label-names needs --labels: the label of each name, in order")
    if not labels:
        found: set[int] = set()
        for f in files:
            if is_image_folder(f):  # the class folders say it: no image is read
                root = folder_path(f)
                names = list_images(root, min_classes=1).label_space.names
                found.update(folder_label_space(names, {}, root).labels)
                continue
            data = load_source(f)
            found.update(np.asarray(data.label_space.labels)[np.unique(data.y)].tolist())
        labels = ",".join(str(v) for v in sorted(found))
    server_test = cfg.local_data.server_test
    # A file's path made absolute: a deployment's ServerApp runs in another working directory.
    if server_test and folder_path(server_test).exists():
        server_test = absolute_spec(server_test)
    elif server_test and server_test not in BUILTIN_SOURCES and "," not in server_test:
        raise DataError(f"--server-test file not found: {server_test}")
    return cfg.with_(clients=len(files)).with_group("local_data", enabled=True,
                                                     labels=labels, server_test=server_test)


def study_rebnn(opts: StudyOptions) -> dict[str, Any]:
    """ReBNN vs STE vs XNOR on a binary CNN and the BNN head; writes into ``opts.out``."""
    from hybnn.experiments.rebnn_study import run_study

    return run_study(opts.study_config(), opts.out, progress=opts.progress)


def data_of(given: str | None, recorded: object, what: str,
            required: bool = True) -> str | None:
    """The data a command works on: ``given``, else the source ``what`` records (an
    encoder's training data, a model's task data). Another source than the recorded one is
    allowed (an encoder reused on new data) with a :class:`HybnnWarning`."""
    known = recorded if isinstance(recorded, str) and recorded != ARRAYS_SOURCE else None
    if given is None:
        if known is None and required:
            raise DataError(f"give --data: {what} does not record the data it was trained on")
        return known
    if known is not None and given != known:
        warnings.warn(f"{what} was trained on {known}; working on {given} with it",
                      HybnnWarning, stacklevel=2)
    return given


def _recorded_source(data: object) -> object:
    return data.get("source") if isinstance(data, dict) else None


def model_labels(meta: dict[str, Any], model: nn.Module) -> LabelSpace:
    """The label space a model was saved with (numbered outputs for older models)."""
    return LabelSpace.from_json(meta.get("label_space"),
                                int(meta["config"]["arch_config"]["num_classes"]))


def _check_channels(meta: dict[str, Any], x: np.ndarray, model_dir: Any) -> None:
    """Images (N, C, H, W) must have the channels and size an image model was built for."""
    cfg = meta["config"]["arch_config"]
    want = (int(cfg.get("in_channels", 1)), *(int(v) for v in cfg["image_size"]))
    if tuple(x.shape[1:]) != want:
        raise DataError(f"model {model_dir} expects images of {want[0]} channel(s) of "
                        f"{want[1]}x{want[2]}, got {x.shape[1]} of {x.shape[2]}x{x.shape[3]}")


def _packed_logits(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """Run ``model`` through the packed XNOR/popcount engine (exported to a temporary file)."""
    from hybnn.engine.export import export_model
    from hybnn.engine.packed import load as load_engine

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.engine"
        try:
            export_model(model, path)
        except (TypeError, ValueError) as exc:
            raise DataError(f"the packed engine cannot run this model ({exc}); "
                            "use --engine torch") from None
        return load_engine(path).logits(np.ascontiguousarray(x, dtype=np.float32))


def _matching_encoder(encoder_dir: str, meta: dict[str, Any], model_dir: Any,
                      device: str = "cpu") -> CodeEncoder:
    enc = open_encoder(encoder_dir, device)
    require_same_encoder(meta.get("encoder_fingerprint"), enc, model_dir, encoder_dir)
    return enc
