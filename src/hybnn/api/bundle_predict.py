"""``hybnn predict`` on a bundle file: the torch-free runtime (:mod:`hybnn.runtime`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hybnn.api.options import PredictOptions
from hybnn.errors import DataError


def is_bundle_path(path: str) -> bool:
    """A model given as a file is a bundle (model artifacts are directories)."""
    return Path(path).is_file()


def predict(opts: PredictOptions) -> list[dict[str, Any]]:
    """Classify with a bundle file (no torch) or a model directory (torch or packed)."""
    if not is_bundle_path(opts.model):
        from hybnn.api.commands import predict as predict_directory

        return predict_directory(opts)
    return predict_bundle(opts)


def predict_bundle(opts: PredictOptions) -> list[dict[str, Any]]:
    """Rows like :func:`hybnn.api.commands.predict`'s, from a bundle's runtime."""
    from hybnn.data.inputs import read_inputs
    from hybnn.runtime import load

    if opts.encoder:
        raise DataError("a bundle carries its encoder: drop --encoder")
    model = load(opts.model, threads=1)
    x, names = read_inputs(opts.inputs)
    if x.shape[1:] != model.input_shape:
        raise DataError(f"the bundle expects images of shape {model.input_shape}, "
                        f"got {x.shape[1:]}")
    logits = model.logits(x)
    z = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    space = model.label_space
    return [{"input": n, "index": int(p.argmax()), "label": space.labels[int(p.argmax())],
             "name": space.names[int(p.argmax())], "probability": float(p.max())}
            for n, p in zip(names, probs, strict=True)]
