"""Export a trained BNNHead, BinaryCNN or fully binary HyBNN to an engine file.

See :mod:`hybnn.engine.format` for the file. A :class:`FullyBinaryHyBNN` (distilled binary
encoder + BNN head) becomes one network, images in, logits out. With the cnn student
(:class:`BinaryEncoder`) it is a chain: the encoder's convolutions and its dense layer to
the code bits fold to thresholds like any hidden layer, then the head follows; its input
spec records ``"prep": "centered"``: the runtime subtracts 0.5 from the [0, 1] pixels before
the sign, as the torch model does. With the resnet18 student (:class:`ResNetEncoder`) it is
a graph (:mod:`hybnn.engine.graph_export`): the student's preparation is an affine node, its
real-valued classifier's outputs are signed into the head's first binary layer.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from torch import nn

from hybnn.binary.layers import BinaryConv2d, BinaryLayer, BinaryLinear
from hybnn.binary.quantizers import QUANTIZERS
from hybnn.engine import format as fmt
from hybnn.engine.packing import pack_sign_words, words_for
from hybnn.engine.thresholds import output_affine, sign_thresholds
from hybnn.models.binary_cnn import BinaryCNN
from hybnn.models.binary_encoder import BinaryEncoder
from hybnn.models.bnn_head import BNNHead
from hybnn.models.fully_binary import FullyBinaryHyBNN
from hybnn.models.names import FULLY_BINARY

BIT_ORDER = "bit j of word k = value 64k+j (NHWC channels for images); 1 = -1, 0 = +1; pad bits 0"


def _pairs(modules: list[nn.Module]) -> list[tuple[Any, Any]]:
    """(binary layer, batch norm) pairs; their types are checked where they are folded."""
    if len(modules) % 2:
        raise ValueError("expected (binary layer, batch norm) pairs")
    return list(zip(modules[0::2], modules[1::2], strict=True))


def _check_layer(layer: BinaryLayer) -> None:
    if layer.bias is not None:
        raise ValueError("binary layers with a bias are not supported by the packed engine")
    known = tuple(QUANTIZERS.values())
    if layer.input_quantizer is None or layer.input_quantizer not in known:
        raise ValueError("the packed engine needs every binary layer to binarize its input by sign")
    if layer.weight_quantizer not in known:
        raise ValueError("the packed engine needs sign weight quantizers")


def _negative(layer: BinaryLayer) -> np.ndarray:
    """True where sign(w) = -1 (sign(0) = +1)."""
    return (layer.weight.detach() < 0).numpy()


def _alpha(layer: BinaryLayer) -> torch.Tensor | None:
    with torch.no_grad():
        a = layer.weight_scale()
    return None if a is None else a.detach().clone()


def _flip_rows(neg: np.ndarray, flips: np.ndarray) -> np.ndarray:
    """Negate the weights of flipped output channels (axis 0), before packing."""
    shape = (-1,) + (1,) * (neg.ndim - 1)
    return np.where(flips.reshape(shape) < 0, ~neg, neg)


class _Builder:
    def __init__(self) -> None:
        self.layers: list[dict[str, Any]] = []
        self.arrays: dict[str, np.ndarray] = {}

    def add(self, spec: dict[str, Any], **arrays: np.ndarray) -> None:
        i = len(self.layers)
        for key, arr in arrays.items():
            name = f"layers.{i}.{key}"
            self.arrays[name] = arr
            spec[key] = name
        self.layers.append(spec)

    def conv(
        self, layer: BinaryConv2d, bn: nn.Module, in_chw: tuple[int, int, int]
    ) -> tuple[int, int, int]:
        _check_layer(layer)
        c, h, w = in_chw
        if layer.in_channels != c:
            raise ValueError(f"conv expects {layer.in_channels} channels, gets {c}")
        k, s, p = layer.kernel_size, layer.stride, layer.padding
        kbits = k * k * c
        thr, flips = sign_thresholds(bn, _alpha(layer), kbits)
        neg = _flip_rows(_negative(layer), flips).transpose(0, 2, 3, 1)  # (O, kh, kw, C)
        ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        spec = {
            "op": "conv2d",
            "in_channels": c,
            "in_height": h,
            "in_width": w,
            "out_channels": layer.out_channels,
            "kernel_size": k,
            "stride": s,
            "padding": p,
            "out_height": ho,
            "out_width": wo,
            "kbits": kbits,
        }
        self.add(spec, weights=pack_sign_words(neg), thresholds=thr, flips=flips)
        return layer.out_channels, ho, wo

    def dense(
        self, layer: BinaryLinear, bn: nn.Module, in_chw: tuple[int, int, int] | None, last: bool
    ) -> None:
        _check_layer(layer)
        neg = _negative(layer)
        if in_chw is None:
            kbits, in_words = layer.in_features, words_for(layer.in_features)
        else:  # after convolutions: reorder torch's NCHW flatten to packed NHWC pixels
            c, h, w = in_chw
            if c * h * w != layer.in_features:
                raise ValueError(
                    f"dense layer expects {layer.in_features} inputs, gets {c * h * w}"
                )
            kbits, in_words = c * h * w, h * w * words_for(c)
            neg = neg.reshape(-1, c, h, w).transpose(0, 2, 3, 1)
        spec = {
            "op": "output" if last else "dense",
            "in_bits": kbits,
            "in_words": in_words,
            "out_features": layer.out_features,
        }
        alpha = _alpha(layer)
        if last:
            a, scale, shift = output_affine(bn, alpha)
            words = pack_sign_words(neg).reshape(layer.out_features, in_words)
            self.add(spec, weights=words, alpha=a, bn_scale=scale, bn_shift=shift)
        else:
            thr, flips = sign_thresholds(bn, alpha, kbits)
            words = pack_sign_words(_flip_rows(neg, flips)).reshape(layer.out_features, in_words)
            self.add(spec, weights=words, thresholds=thr, flips=flips)


def build(model: nn.Module) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, np.ndarray]]:
    """(input spec, layer specs, arrays) of a BNNHead, BinaryCNN or FullyBinaryHyBNN."""
    b = _Builder()
    if isinstance(model, BNNHead):
        pairs = _pairs(list(model.net))
        spec = {"kind": "rows", "bits": int(model.config["in_bits"])}
        for i, (layer, bn) in enumerate(pairs):
            b.dense(layer, bn, None, last=i == len(pairs) - 1)
    elif isinstance(model, BinaryCNN):
        spec, chw = _image_input(model)
        for layer, bn in _pairs(list(model.features)):
            chw = b.conv(layer, bn, chw)
        pairs = _pairs(list(model.classifier))
        for i, (layer, bn) in enumerate(pairs):
            b.dense(layer, bn, chw if i == 0 else None, last=i == len(pairs) - 1)
    elif isinstance(model, FullyBinaryHyBNN) and isinstance(model.encoder, BinaryEncoder):
        spec, chw = _image_input(model.encoder)
        spec["prep"] = "centered"
        for layer, bn in _pairs(list(model.encoder.features)):
            chw = b.conv(layer, bn, chw)
        ((layer, bn),) = _pairs(list(model.encoder.latent))
        b.dense(layer, bn, chw, last=False)  # the code bits: sign(logits), sign(0) = +1
        pairs = _pairs(list(model.head.net))
        for i, (layer, bn) in enumerate(pairs):
            b.dense(layer, bn, None, last=i == len(pairs) - 1)
    else:
        raise TypeError(f"cannot export a {type(model).__name__}: BNNHead, BinaryCNN or "
                        "FullyBinaryHyBNN expected")
    return spec, b.layers, b.arrays


def _image_input(model: BinaryCNN | BinaryEncoder) -> tuple[dict[str, Any], tuple[int, int, int]]:
    """(input spec, (C, H, W)) of a model on images."""
    h, w = model.config["image_size"]
    chw = (int(model.config["in_channels"]), int(h), int(w))
    return {"kind": "image", "channels": chw[0], "height": chw[1], "width": chw[2]}, chw


CHAINS = (BNNHead, BinaryCNN, FullyBinaryHyBNN)  # the models a version-2 chain holds


def engine_header(
    model: nn.Module, metadata: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(engine header, arrays) of ``model``: what an engine file holds. A BNNHead, BinaryCNN
    or FullyBinaryHyBNN is a chain of binary layers; any other module (a binary ResNet) is
    traced into a graph (:mod:`hybnn.engine.graph_export`)."""
    from hybnn import __version__
    from hybnn.models.io import arch_name

    if isinstance(model, FullyBinaryHyBNN) and not isinstance(model.encoder, BinaryEncoder):
        from hybnn.engine.graph_export import graph_header

        c = int(model.encoder.config["in_channels"])
        header, arrays = graph_header(model, (c, *model.encoder.image_size), metadata)
        return {**header, "arch": FULLY_BINARY}, arrays
    if not isinstance(model, CHAINS):
        from hybnn.engine.graph_export import graph_header

        return graph_header(model, metadata=metadata)

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            spec, layers, arrays = build(model)
    finally:
        model.train(was_training)
    header = {
        "kind": fmt.KIND,
        "format_version": fmt.FORMAT_VERSION,
        "hybnn_version": __version__,
        "bit_order": BIT_ORDER,
        "arch": FULLY_BINARY if isinstance(model, FullyBinaryHyBNN) else arch_name(model),
        "arch_config": model.config,
        "num_classes": int(layers[-1]["out_features"]),
        "input": spec,
        "layers": layers,
        "metadata": dict(metadata or {}),
    }
    return header, arrays


def export_model(
    model: nn.Module, path: str | os.PathLike[str], metadata: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Export ``model`` to ``path``; returns the header. A BNNHead, BinaryCNN or
    FullyBinaryHyBNN (any scaling) is a chain; any module built from hybnn's binary layers and
    the modules :mod:`hybnn.engine.graph_export` lists is a graph."""
    header, arrays = engine_header(model, metadata)
    fmt.write(path, header, arrays)
    return header


def source_metadata(meta: dict[str, Any]) -> dict[str, Any]:
    """What a deployed file keeps of a model's metadata: all but its config and history.

    The training history stays with the model directory: it would otherwise outweigh the
    packed weights several times.
    """
    return {k: v for k, v in meta.items() if k not in ("config", "history")}


def export_artifact(
    model_dir: str | os.PathLike[str], path: str | os.PathLike[str]
) -> dict[str, Any]:
    """Export a model saved by :func:`hybnn.models.io.save_model`; returns the header."""
    from hybnn.models.io import load_model

    model, meta = load_model(model_dir)
    source = {"model_dir": str(model_dir), **source_metadata(meta)}
    return export_model(model, path, metadata={"source": source})


def export_fully_binary(
    head_dir: str | os.PathLike[str],
    encoder_dir: str | os.PathLike[str],
    path: str | os.PathLike[str],
) -> dict[str, Any]:
    """Export a BNN head trained on a binary encoder's codes, with that encoder, as one
    engine network (images -> logits); refuses a head trained on another encoder's codes."""
    from hybnn.encoders import distilled, require_same_encoder
    from hybnn.models.io import load_model

    head, meta = load_model(head_dir)
    if not isinstance(head, BNNHead):
        raise TypeError(f"{head_dir} holds a {meta['config']['arch']!r} model, not a BNN head")
    encoder = distilled.load(encoder_dir)
    require_same_encoder(meta.get("encoder_fingerprint"), encoder, head_dir, encoder_dir)
    source = source_metadata(meta)
    return export_model(FullyBinaryHyBNN(encoder.model, head), path, metadata={
        "source": {"model_dir": str(head_dir), **source},
        "encoder": {"dir": str(encoder_dir), "fingerprint": encoder.fingerprint,
                    "teacher_fingerprint": encoder.teacher_fingerprint,
                    "student": encoder.meta.get("student", "cnn")},
    })
