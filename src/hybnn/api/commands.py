"""The library behind every ``hybnn`` command: one function per command, options in, results out.

Nothing here parses arguments or prints; :mod:`hybnn.cli` does both around these calls.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hybnn.api.options import (
    ContinualOptions,
    EvaluateOptions,
    ExportOptions,
    ExtractOptions,
    FederateOptions,
    PredictOptions,
    PretrainOptions,
    ReproduceOptions,
    StudyOptions,
    SummaryOptions,
    TrainOptions,
)
from hybnn.data import load_split, prepare, read_inputs
from hybnn.data.labels import LabelSpace
from hybnn.errors import ArtifactError, DataError, FingerprintMismatch
from hybnn.hooks import History
from hybnn.models.io import load_model
from hybnn.pipeline.codes import CodeStore, bits_to_signs
from hybnn.pipeline.config import TrainConfig
from hybnn.pipeline.encoder import Encoder, load_encoder
from hybnn.pipeline.extract import encode_to_codes
from hybnn.pipeline.fit import train_head, train_image_model
from hybnn.pipeline.metrics import confusion_matrix, per_class
from hybnn.pipeline.pretrain import pretrain as pretrain_encoder
from hybnn.pipeline.train import evaluate_classifier, resolve_device
from hybnn.plots import plot_confusion


def pretrain(opts: PretrainOptions) -> Encoder:
    """Phase 1 on the *general* data: the training split of every class, labels unused."""
    general = load_split(opts.data, "all", "train")
    info = {"source": opts.data, "split": "train", "samples": len(general)}
    return pretrain_encoder(general.x, opts.out, opts.config, info, progress=opts.progress,
                            resume=opts.resume)


def extract(opts: ExtractOptions) -> CodeStore:
    """Phase 2: encode one split of one task with a frozen encoder; saved to ``opts.out``."""
    resolve_device(opts.device)
    encoder = load_encoder(opts.encoder, opts.device)
    part = load_split(opts.data, opts.task, opts.split)
    store = encode_to_codes(encoder, part, {"task": opts.task, "split": opts.split})
    store.save(opts.out)
    return store


def train(opts: TrainOptions) -> tuple[nn.Module, History]:
    """Phase 3: the BNN head on code stores, or a baseline CNN on a task's images."""
    values = {k: v for k, v in dataclasses.asdict(opts.config).items()
              if k not in ("epochs", "lr")}
    config = TrainConfig.for_model(opts.model, opts.epochs, opts.lr, **values)
    if opts.model == "hybnn":
        if not opts.codes:
            raise DataError("--model hybnn trains on codes: give --codes (from `hybnn extract`)")
        if any(h < 1 for h in opts.hidden):
            raise DataError(f"--hidden widths must be positive, got {opts.hidden}")
        train_codes = CodeStore.load(opts.codes)
        test_codes = CodeStore.load(opts.test_codes) if opts.test_codes else None
        return train_head(train_codes, test_codes, config, opts.hidden, opts.scaling, opts.out,
                          opts.resume, progress=opts.progress)
    train_set = load_split(opts.data, opts.task, "train")
    test_set = load_split(opts.data, opts.task, "test")
    return train_image_model(opts.model, train_set, test_set, opts.prep, config, opts.scaling,
                             opts.out, opts.resume, progress=opts.progress,
                             extra={"task": opts.task})


def evaluate(opts: EvaluateOptions) -> dict[str, Any]:
    """Accuracy and loss of a saved model on a code store or on a data split."""
    device = resolve_device(opts.device)
    model, meta = load_model(opts.model)
    arch = meta["config"]["arch"]
    task = opts.task or meta.get("task") or "all"
    data = opts.data or meta.get("source")
    if arch == "hybnn":
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
        x = torch.from_numpy(prepare(part.x, meta.get("prep", "unit")))
        y = torch.from_numpy(part.y)
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
    model, meta = load_model(opts.model)
    arch = meta["config"]["arch"]
    x, names = read_inputs(opts.inputs)
    if arch == "hybnn":
        if not opts.encoder:
            raise DataError("a BNN head classifies images through its encoder: give --encoder")
        enc = _matching_encoder(opts.encoder, meta, opts.model, opts.device)
        net_input = bits_to_signs(enc.encode(x)).numpy()
    else:
        size = tuple(meta["config"]["arch_config"]["image_size"])
        if x.shape[2:] != size:
            raise DataError(f"model expects {size[0]}x{size[1]} images, got "
                            f"{x.shape[2]}x{x.shape[3]}")
        net_input = prepare(x, meta.get("prep", "unit"))
    if opts.engine == "packed":
        logits = _packed_logits(model, net_input)
    elif opts.engine == "torch":
        with torch.no_grad():
            logits = model.to(device)(torch.from_numpy(net_input).to(device)).cpu().numpy()
    else:
        raise DataError(f"unknown engine {opts.engine!r}: use torch or packed")
    probs = torch.softmax(torch.from_numpy(np.asarray(logits, dtype=np.float32)), 1).numpy()
    space = model_labels(meta, model)
    return [{"input": n, "index": int(p.argmax()), "label": space.labels[int(p.argmax())],
             "name": space.names[int(p.argmax())], "probability": float(p.max())}
            for n, p in zip(names, probs, strict=True)]


def export(opts: ExportOptions) -> dict[str, Any]:
    """Write a trained BNN head or binary CNN as a packed engine file; returns its header."""
    from hybnn.engine.export import export_artifact

    try:
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
    cfg = opts.config.with_(min_clients=min(opts.config.min_clients, opts.config.clients))
    resolve_device(cfg.device)
    if opts.deploy:
        from hybnn.federated.deploy import deploy

        return deploy(cfg, opts.out, pretrain_epochs=opts.pretrain_epochs,
                      centralized=opts.centralized)
    from hybnn.federated.simulation import federate as simulate

    return simulate(cfg, opts.out, pretrain_epochs=opts.pretrain_epochs,
                    centralized=opts.centralized)


def study_rebnn(opts: StudyOptions) -> dict[str, Any]:
    """ReBNN vs STE vs XNOR on a binary CNN and the BNN head; writes into ``opts.out``."""
    from hybnn.experiments.rebnn_study import run_study

    return run_study(opts.study_config(), opts.out, progress=opts.progress)


def model_labels(meta: dict[str, Any], model: nn.Module) -> LabelSpace:
    """The label space a model was saved with (numbered outputs for older models)."""
    return LabelSpace.from_json(meta.get("label_space"),
                                int(meta["config"]["arch_config"]["num_classes"]))


@torch.no_grad()
def predict_classes(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> np.ndarray:
    """Argmax class of every input, in eval mode, on the model's device."""
    model.eval()
    device = next(model.parameters()).device
    return torch.cat([model(x[i:i + batch_size].to(device)).argmax(1).cpu()
                      for i in range(0, len(x), batch_size)]).numpy()


def _packed_logits(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """Run ``model`` through the packed XNOR/popcount engine (exported to a temporary file)."""
    from hybnn.engine.export import export_model
    from hybnn.engine.runtime import load as load_engine

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.engine"
        try:
            export_model(model, path)
        except (TypeError, ValueError) as exc:
            raise DataError(f"the packed engine cannot run this model ({exc}); "
                            "use --engine torch") from None
        return load_engine(path).logits(np.ascontiguousarray(x, dtype=np.float32))


def _matching_encoder(encoder_dir: str, meta: dict[str, Any], model_dir: Any,
                      device: str = "cpu") -> Encoder:
    enc = load_encoder(encoder_dir, device)
    want = meta.get("encoder_fingerprint")
    if want != enc.fingerprint:
        raise FingerprintMismatch(
            f"model {model_dir} was trained on codes of encoder {str(want)[:12]}, "
            f"but {encoder_dir} is encoder {enc.fingerprint[:12]}"
        )
    return enc
