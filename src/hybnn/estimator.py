"""HyBNN from Python on your own arrays: :class:`Encoder`, :class:`Head` and :class:`Model`.

>>> enc = hybnn.Encoder.load("runs/encoder")                          # doctest: +SKIP
>>> head = hybnn.Head().fit(enc.encode(x_train), y_train, encoder=enc)  # doctest: +SKIP
>>> hybnn.Model(enc, head).predict(x_test).names[:3]                   # doctest: +SKIP
['Pullover', 'Trouser', 'Bag']

Images are uint8 pixels or floats in [0, 1], shaped (N, H, W) or (N, C, H, W). Labels are
any non-negative integers or strings; predictions come back as the labels given to
:meth:`Head.fit`, with their names. Everything here is a thin layer over the same code the
``hybnn`` commands run, and artifacts saved here are the commands' artifacts.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hybnn.artifacts import versions
from hybnn.binary.summary import deployed_bytes
from hybnn.data.dataset import images_sha256, model_images, validate_arrays
from hybnn.data.labels import LabelSpace
from hybnn.data.names import ARRAYS_SOURCE
from hybnn.encoders import CodeEncoder, open_encoder, require_same_encoder, resolve
from hybnn.encoders.distilled import DistilledEncoder
from hybnn.errors import DataError
from hybnn.hooks import History
from hybnn.models.bnn_head import BNNHead
from hybnn.models.io import load_classifier, save_model
from hybnn.models.names import default_head_hidden
from hybnn.pipeline.codes import CodeStore, bits_to_signs, pack_code_bits
from hybnn.pipeline.config import PretrainConfig, TrainConfig
from hybnn.pipeline.fit import train_head
from hybnn.pipeline.limits import check_head
from hybnn.pipeline.metrics import confusion_matrix, per_class, per_class_table
from hybnn.pipeline.pretrain import pretrain
from hybnn.pipeline.train import evaluate_classifier, resolve_device

UNKNOWN_ENCODER = "unknown"  # what a head fit without ``encoder=`` records


class Encoder:
    """A frozen code encoder of any kind (VAE, distilled binary, int8), from its directory."""

    def __init__(self, encoder: CodeEncoder, directory: str | os.PathLike[str]) -> None:
        self.encoder = encoder
        self.directory = Path(directory)

    @classmethod
    def load(cls, directory: str | os.PathLike[str], device: str = "cpu") -> Encoder:
        """The encoder saved in ``directory`` (``hybnn pretrain``, ``distill``, ``quantize``),
        or shipped in the package under that name: ``Encoder.load("general")``."""
        return cls(open_encoder(directory, device), resolve(directory))

    @classmethod
    def pretrain(cls, images: Any, out: str | os.PathLike[str] | None = None, *,
                 progress: bool = False, **settings: Any) -> Encoder:
        """Pretrain a VAE encoder on ``images`` (labels unused) and save it in ``out`` (a new
        temporary directory when None). ``settings`` are :class:`PretrainConfig`'s fields
        (``epochs``, ``latent_bits``, ``seed``, ...)."""
        known = {f.name for f in fields(PretrainConfig)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise DataError(f"unknown pretrain setting(s) {', '.join(unknown)}; known: "
                            f"{', '.join(sorted(known))}")
        config = PretrainConfig(**settings)
        config.validate()
        resolve_device(config.device)
        x = _images(images)
        directory = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="hybnn-enc-"))
        info = {"source": ARRAYS_SOURCE, "samples": len(x), "sha256": images_sha256(x)}
        encoder = pretrain(x, directory, config, info,
                           progress=progress)
        return cls(encoder, directory)

    @property
    def fingerprint(self) -> str:
        return self.encoder.fingerprint

    @property
    def kind(self) -> str:
        return self.encoder.KIND

    @property
    def latent_bits(self) -> int:
        return self.encoder.latent_bits

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.encoder.channels, *self.encoder.image_size)

    def encode(self, images: Any) -> np.ndarray:
        """Bool codes (N, latent_bits) of images shaped as the encoder was trained."""
        return self.encoder.encode(model_images(images, self.input_shape))

    def __repr__(self) -> str:
        return (f"Encoder({self.kind}, {self.latent_bits} bits, input {self.input_shape}, "
                f"{self.fingerprint[:12]}, {str(self.directory)!r})")


@dataclass(frozen=True)
class Report:
    """How a head or model did on labelled data: overall, per class and the confusion
    (rows: true class, columns: predicted, both in the order of ``names``)."""

    accuracy: float
    loss: float
    samples: int
    labels: tuple[Any, ...]
    names: tuple[str, ...]
    per_class: list[dict[str, Any]]
    confusion: np.ndarray

    def __str__(self) -> str:
        return (f"accuracy {100 * self.accuracy:.2f} % on {self.samples} samples "
                f"(loss {self.loss:.4f})\n\n{per_class_table(self.per_class, self.confusion)}")


@dataclass(frozen=True)
class Predictions:
    """One row per input: the predicted ``labels`` (as given to :meth:`Head.fit`), their
    ``names``, the output ``indices`` and the softmax ``probabilities`` (N, classes)."""

    labels: np.ndarray
    names: list[str]
    indices: np.ndarray
    probabilities: np.ndarray

    def __len__(self) -> int:
        return len(self.indices)


class Head:
    """The BNN head HyBNN trains on codes. ``hidden`` widths default by the number of classes
    (:func:`~hybnn.models.names.default_head_hidden`); ``settings`` are :class:`TrainConfig`'s
    fields (``epochs``, ``lr``, ``seed``, ``batch_size``, ``code_noise``, ``device``, ...)."""

    def __init__(self, hidden: Sequence[int] | None = None, *, scaling: str = "none",
                 progress: bool = False, **settings: Any) -> None:
        known = {f.name for f in fields(TrainConfig)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise DataError(f"unknown training setting(s) {', '.join(unknown)}; known: "
                            f"{', '.join(sorted(known))}")
        self.config = TrainConfig.for_model(
            "head", settings.pop("epochs", None), settings.pop("lr", None),
            settings.pop("code_noise", None), **settings).validate()
        self.hidden = None if hidden is None else [int(h) for h in hidden]
        self.scaling = scaling
        self.progress = progress
        self.model: BNNHead | None = None
        self.label_space: LabelSpace | None = None
        self.string_labels = False
        self.encoder_fingerprint = UNKNOWN_ENCODER
        self.history: History | None = None

    def fit(self, codes: Any, y: Any, names: Mapping[Any, str] | Sequence[str] | None = None,
            *, encoder: Encoder | None = None,
            validation: tuple[Any, Any] | None = None) -> Head:
        """Train on bool codes (N, bits) and labels ``y`` (N,): integers or strings.
        ``names`` names integer labels, as a mapping or a list in sorted label order.
        ``encoder`` is the one the codes came from: recorded, so the head meets no other.
        ``validation`` (codes, labels) is evaluated after every epoch (``history``; shown
        with the progress), never used to train or to select."""
        bits = _codes(codes)
        space, index, strings = _label_space(y, names, len(bits))
        hidden = self.hidden or default_head_hidden(len(space))
        check_head(hidden, "hidden", bits.shape[1], len(space))
        fingerprint = encoder.fingerprint if encoder is not None else UNKNOWN_ENCODER
        meta = {"num_classes": len(space), "label_space": space.to_json()}
        store = CodeStore(pack_code_bits(bits), index, bits.shape[1], fingerprint, meta)
        test = None
        if validation is not None:
            v_bits = _codes(validation[0], bits.shape[1])
            v_index = _indices_in(space, strings, validation[1], len(v_bits))
            test = CodeStore(pack_code_bits(v_bits), v_index, bits.shape[1], fingerprint, meta)
        self.model, self.history = train_head(store, test, self.config, hidden, self.scaling,
                                              progress=self.progress)
        self.label_space, self.string_labels = space, strings
        self.encoder_fingerprint = fingerprint
        return self

    def _fitted(self) -> tuple[BNNHead, LabelSpace]:
        if self.model is None or self.label_space is None:
            raise DataError("this head is not fitted yet: call fit(codes, y) or Head.load(dir)")
        return self.model, self.label_space

    def predict_proba(self, codes: Any) -> np.ndarray:
        """Softmax probabilities (N, classes) of bool codes (N, bits)."""
        model, _ = self._fitted()
        x = bits_to_signs(_codes(codes, model.config["in_bits"]))
        model.eval()
        with torch.no_grad():
            return torch.softmax(model(x), 1).numpy()

    def predictions(self, codes: Any) -> Predictions:
        """Labels, names, indices and probabilities of bool codes (N, bits)."""
        _, space = self._fitted()
        p = self.predict_proba(codes)
        index = p.argmax(1) if len(p) else np.zeros(0, np.int64)
        labels = self._labels()[index] if len(p) else self._labels()[:0]
        return Predictions(labels, [space.names[i] for i in index], index, p)

    def predict(self, codes: Any) -> np.ndarray:
        """The predicted labels (as given to :meth:`fit`) of bool codes (N, bits)."""
        return self.predictions(codes).labels

    def evaluate(self, codes: Any, y: Any) -> Report:
        """Accuracy, loss, per-class results and confusion on labelled codes."""
        model, space = self._fitted()
        bits = _codes(codes, model.config["in_bits"])
        index = self._indices(y, len(bits))
        x, t = bits_to_signs(bits), torch.from_numpy(index)
        loss, acc = evaluate_classifier(model, x, t)
        with torch.no_grad():
            pred = model(x).argmax(1).numpy()
        matrix = confusion_matrix(index, pred, len(space))
        return Report(acc, loss, len(index), tuple(self._labels().tolist()), space.names,
                      per_class(matrix, space), matrix)

    def _labels(self) -> np.ndarray:
        _, space = self._fitted()
        return np.asarray(space.names if self.string_labels else space.labels)

    def _indices(self, y: Any, n: int) -> np.ndarray:
        """Output indices of labels ``y`` in this head's label space."""
        _, space = self._fitted()
        return _indices_in(space, self.string_labels, y, n)

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Save as a model artifact (``hybnn evaluate``, ``export`` and ``predict`` take it)."""
        model, space = self._fitted()
        save_model(directory, model, encoder_fingerprint=self.encoder_fingerprint,
                   label_space=space.to_json(), string_labels=self.string_labels,
                   train_config=asdict(self.config),
                   history=self.history.epochs if self.history else [],
                   deployed_bytes=deployed_bytes(model), versions=versions())
        return Path(directory)

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> Head:
        """A head saved by :meth:`save` or ``hybnn train --model head``."""
        model, meta = load_classifier(directory)
        if not isinstance(model, BNNHead):
            raise DataError(f"{directory} holds a {meta['config']['arch']} model, not a BNN head")
        head = cls(hidden=list(model.config["hidden"]))
        head.model = model
        head.label_space = LabelSpace.from_json(meta.get("label_space"),
                                                int(model.config["num_classes"]))
        head.string_labels = meta.get("string_labels") is True
        head.encoder_fingerprint = str(meta.get("encoder_fingerprint", UNKNOWN_ENCODER))
        return head


class Model:
    """An encoder and a head trained on its codes: images in, labels and names out."""

    def __init__(self, encoder: Encoder, head: Head) -> None:
        head._fitted()
        if head.encoder_fingerprint == UNKNOWN_ENCODER:
            raise DataError("the head does not record its encoder: fit it with "
                            "fit(codes, y, encoder=enc)")
        require_same_encoder(head.encoder_fingerprint, encoder.encoder, "the head",
                             encoder.directory)
        self.encoder, self.head = encoder, head

    def predict(self, images: Any) -> Predictions:
        """Labels, names, indices and probabilities of images."""
        return self.head.predictions(self.encoder.encode(images))

    def evaluate(self, images: Any, y: Any) -> Report:
        return self.head.evaluate(self.encoder.encode(images), y)

    def export(self, out: str | os.PathLike[str], *, int8: bool = False,
               calibration_data: str | None = None) -> dict[str, Any]:
        """Deploy: a bundle (the encoder in ONNX Runtime, ``int8`` quantizes a VAE's) or, for a
        distilled encoder, one fully binary engine file. Returns the written header."""
        with tempfile.TemporaryDirectory(prefix="hybnn-head-") as tmp:
            head_dir = self.head.save(Path(tmp) / "head")
            if isinstance(self.encoder.encoder, DistilledEncoder):
                from hybnn.engine.export import export_fully_binary

                return export_fully_binary(head_dir, self.encoder.directory, out)
            from hybnn.bundle.export import export_bundle

            return export_bundle(head_dir, self.encoder.directory, out, int8,
                                 calibration_data=calibration_data)


def _indices_in(space: LabelSpace, strings: bool, y: Any, n: int) -> np.ndarray:
    """Output indices of labels ``y`` (N,) in ``space`` (its names when labels are strings)."""
    y = np.asarray(y)
    if y.shape != (n,):
        raise DataError(f"labels must have shape ({n},), got {y.shape}")
    lookup = {v: i for i, v in enumerate(space.names if strings else space.labels)}
    try:
        return np.array([lookup[v] for v in y.tolist()], np.int64)
    except KeyError as exc:
        raise DataError(f"label {exc.args[0]!r} is not one of this head's classes "
                        f"{list(lookup)[:20]}") from None


def _images(images: Any) -> np.ndarray:
    """Float32 NCHW images in [0, 1] from what :func:`validate_arrays` accepts."""
    x = np.asarray(images)
    return validate_arrays(x, np.zeros(len(x) if x.ndim else 0, np.int64), "images")[0]


def _codes(codes: Any, bits: int | None = None) -> np.ndarray:
    """Bool codes (N, bits): bools, or 0/1 integers."""
    c = np.asarray(codes)
    if c.ndim != 2 or (bits is not None and c.shape[1] != bits):
        want = f"(N, {bits})" if bits is not None else "(N, bits)"
        raise DataError(f"codes must have shape {want}, got {c.shape}")
    if c.dtype != np.bool_:
        if not np.issubdtype(c.dtype, np.integer) or (c.size and not np.isin(c, (0, 1)).all()):
            raise DataError(f"codes must be bools or 0/1 integers (from Encoder.encode), "
                            f"got {c.dtype}")
        c = c.astype(bool)
    return np.ascontiguousarray(c)


def _label_space(y: Any, names: Mapping[Any, str] | Sequence[str] | None,
                 n: int) -> tuple[LabelSpace, np.ndarray, bool]:
    """(label space, output index of every sample, whether the labels are strings)."""
    y = np.asarray(y)
    if y.shape != (n,):
        raise DataError(f"labels must have shape ({n},) for {n} codes, got {y.shape}")
    if y.dtype.kind in "US":
        if names is not None:
            raise DataError("string labels name themselves: drop names=")
        values, index = np.unique(y.astype(str), return_inverse=True)
        space = LabelSpace.identity(len(values), [str(v) for v in values])
        return space, index.astype(np.int64), True
    y = validate_arrays(np.zeros((n, 1, 1, 1), np.uint8), y, "labels")[1]
    values, index = np.unique(y, return_inverse=True)
    labels = [int(v) for v in values]
    if names is None:
        named = [str(v) for v in labels]
    elif isinstance(names, Mapping):
        missing = [v for v in labels if v not in names]
        if missing:
            raise DataError(f"names= has no name for label(s) {missing[:10]}")
        named = [str(names[v]) for v in labels]
    else:
        if len(names) != len(labels):
            raise DataError(f"names= has {len(names)} names for {len(labels)} labels "
                            f"{labels[:10]} (give them in sorted label order, or a mapping)")
        named = [str(v) for v in names]
    return LabelSpace(tuple(labels), tuple(named)), index.astype(np.int64), False
