"""The library functions behind the CLI: each phase from names and paths to artifacts."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hybnn.data import load_source, prepare, select_task, train_test
from hybnn.data.dataset import Dataset, validate_arrays
from hybnn.errors import DataError, FingerprintMismatch
from hybnn.models.io import load_model
from hybnn.pipeline.codes import CodeStore, bits_to_signs
from hybnn.pipeline.encoder import Encoder, load_encoder
from hybnn.pipeline.extract import encode_to_codes
from hybnn.pipeline.fit import train_head, train_image_model
from hybnn.pipeline.pretrain import PretrainConfig, pretrain
from hybnn.pipeline.train import History, TrainConfig, evaluate_classifier


def load_split(data: str, task: str, split: str) -> Dataset:
    """A data source, restricted to a task and a split (train, test or all)."""
    source = load_source(data)
    if split == "all":
        part = source
    else:
        train, test = train_test(source)
        part = train if split == "train" else test
    return select_task(part, task)


def pretrain_on_source(data: str, out: str | os.PathLike[str], config: PretrainConfig,
                       progress: bool = True) -> Encoder:
    """Phase 1 on the *general* data: the training split of every class, labels unused."""
    general = load_split(data, "all", "train")
    info = {"source": data, "split": "train", "samples": len(general)}
    return pretrain(general.x, out, config, info, progress=progress)


def extract_codes(encoder_dir: str | os.PathLike[str], data: str, task: str,
                  split: str) -> CodeStore:
    """Phase 2: encode one split of one task with a frozen encoder."""
    encoder = load_encoder(encoder_dir)
    part = load_split(data, task, split)
    return encode_to_codes(encoder, part, {"task": task, "split": split})


def train_from_args(args: argparse.Namespace) -> History:
    """Phase 3 from parsed ``hybnn train`` arguments."""
    binary = args.model in ("hybnn", "bcnn")
    config = TrainConfig(
        epochs=args.epochs if args.epochs is not None else (100 if args.model == "hybnn" else 15),
        batch_size=args.batch_size,
        lr=args.lr if args.lr is not None else (1e-2 if binary else 1e-3),
        seed=args.seed, device=args.device,
    )
    progress = not args.no_progress
    if args.model == "hybnn":
        if not args.codes:
            raise DataError("--model hybnn trains on codes: give --codes (from `hybnn extract`)")
        if any(h < 1 for h in args.hidden):
            raise DataError(f"--hidden widths must be positive, got {args.hidden}")
        train = CodeStore.load(args.codes)
        test = CodeStore.load(args.test_codes) if args.test_codes else None
        _, history = train_head(train, test, config, args.hidden, args.scaling, args.out,
                                args.resume, progress=progress)
        return history
    train_set = load_split(args.data, args.task, "train")
    test_set = load_split(args.data, args.task, "test")
    _, history = train_image_model(args.model, train_set, test_set,
                                   args.prep, config, args.scaling, args.out, args.resume,
                                   progress=progress, extra={"task": args.task})
    return history


def evaluate_model(model_dir: str | os.PathLike[str], codes: str | None = None,
                   encoder: str | None = None, data: str | None = None,
                   task: str | None = None, split: str = "test") -> dict[str, Any]:
    """Accuracy and loss of a saved model on a code store or on a data split."""
    model, meta = load_model(model_dir)
    arch = meta["config"]["arch"]
    task = task or meta.get("task") or "all"
    data = data or meta.get("source")
    if arch == "bnn_head":
        if codes:
            store = CodeStore.load(codes)
            store.require_encoder(str(meta.get("encoder_fingerprint")), f"model {model_dir}")
        else:
            if not (encoder and data):
                raise DataError("a BNN head is evaluated on --codes, or on --data with --encoder")
            enc = _matching_encoder(encoder, meta, model_dir)
            store = encode_to_codes(enc, load_split(data, task, split))
        x, y = store.tensors()
    else:
        if not data:
            raise DataError("give --data: the model does not record its data source")
        part = load_split(data, task, split)
        x = torch.from_numpy(prepare(part.x, meta.get("prep", "unit")))
        y = torch.from_numpy(part.y)
    loss, acc = evaluate_classifier(model, x, y)
    return {"model": str(model_dir), "arch": arch, "task": task, "split": split,
            "samples": len(y), "accuracy": acc, "loss": loss}


def read_inputs(paths: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Images from PNG/JPEG files (grayscale) or arrays from .npy/.npz (key ``x``)."""
    arrays, names = [], []
    for raw in paths:
        path = Path(raw)
        if not path.is_file():
            raise DataError(f"input not found: {path}")
        suffix = path.suffix.lower()
        try:
            if suffix == ".npy":
                arr = np.load(path, allow_pickle=False)
            elif suffix == ".npz":
                with np.load(path, allow_pickle=False) as npz:
                    if "x" not in npz.files:
                        raise DataError(f"{path}: .npz input needs an array named x")
                    arr = npz["x"]
            else:
                from PIL import Image, UnidentifiedImageError

                try:
                    with Image.open(path) as img:
                        arr = np.asarray(img.convert("L"))[None]
                except UnidentifiedImageError:
                    raise DataError(f"{path}: not an image or array file") from None
        except (ValueError, OSError) as exc:
            raise DataError(f"{path}: cannot read input ({exc})") from None
        if arr.ndim == 2 and suffix != ".npy":
            arr = arr[None]
        arrays.append(arr)
        names += [str(path)] if len(arr) == 1 else [f"{path}[{i}]" for i in range(len(arr))]
    x = np.concatenate([a.reshape(len(a), *a.shape[1:]) for a in arrays]) if arrays else None
    if x is None:
        raise DataError("no inputs given")
    x, _ = validate_arrays(x, np.zeros(len(x), dtype=np.int64), "input")
    return x, names


def predict_files(model_dir: str | os.PathLike[str], inputs: Sequence[str],
                  encoder: str | None = None, engine: str = "torch") -> list[dict[str, Any]]:
    """Classify images or arrays with a saved model (torch or the packed engine)."""
    model, meta = load_model(model_dir)
    arch = meta["config"]["arch"]
    x, names = read_inputs(inputs)
    if arch == "bnn_head":
        if not encoder:
            raise DataError("a BNN head classifies images through its encoder: give --encoder")
        enc = _matching_encoder(encoder, meta, model_dir)
        net_input = bits_to_signs(enc.encode(x)).numpy()
    else:
        size = tuple(meta["config"]["arch_config"]["image_size"])
        if x.shape[2:] != size:
            raise DataError(f"model expects {size[0]}x{size[1]} images, got "
                            f"{x.shape[2]}x{x.shape[3]}")
        net_input = prepare(x, meta.get("prep", "unit"))
    if engine == "packed":
        logits = _packed_logits(model, net_input)
    elif engine == "torch":
        with torch.no_grad():
            logits = model(torch.from_numpy(net_input)).numpy()
    else:
        raise DataError(f"unknown engine {engine!r}: use torch or packed")
    probs = torch.softmax(torch.from_numpy(np.asarray(logits, dtype=np.float32)), 1).numpy()
    return [{"input": n, "class": int(p.argmax()), "probability": float(p.max())}
            for n, p in zip(names, probs, strict=True)]


def _packed_logits(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    """Run ``model`` through the packed XNOR/popcount engine (exported to a temporary file)."""
    import tempfile

    from hybnn.engine import export_model
    from hybnn.engine import load as load_engine

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.hybe"
        try:
            export_model(model, path)
        except (TypeError, ValueError) as exc:
            raise DataError(f"the packed engine cannot run this model ({exc}); "
                            "use --engine torch") from None
        return load_engine(path).logits(np.ascontiguousarray(x, dtype=np.float32))


def _matching_encoder(encoder_dir: str, meta: dict[str, Any], model_dir: Any) -> Encoder:
    enc = load_encoder(encoder_dir)
    want = meta.get("encoder_fingerprint")
    if want != enc.fingerprint:
        raise FingerprintMismatch(
            f"model {model_dir} was trained on codes of encoder {str(want)[:12]}, "
            f"but {encoder_dir} is encoder {enc.fingerprint[:12]}"
        )
    return enc

