"""Model, data, local training and evaluation of FedHyBNN: the centralized pipeline per client.

A client loads the data source, keeps the task's classes, takes its partition of the train
and test splits, encodes them with its frozen encoder (``encode_to_codes``) and trains the
BNN head on its codes with ``fit_classifier`` — exactly the centralized phase 3, on less
data. The baselines ``bcnn`` / ``fpcnn`` train the whole CNN on the partition's images.
The server uses the same functions for its held-out test set.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from torch import nn

from hybnn.data import load_source
from hybnn.data.dataset import Dataset
from hybnn.data.folder import absolute_spec, is_image_folder, load_folder
from hybnn.data.labels import LabelSpace
from hybnn.data.splits import stratified_split
from hybnn.encoders import CodeEncoder, open_encoder, resolve
from hybnn.errors import DataError, FingerprintMismatch
from hybnn.federated.config import FedConfig
from hybnn.federated.encoding import Layout
from hybnn.federated.partition import partition_indices, task_splits
from hybnn.hooks import Callback, History
from hybnn.models.bnn_head import BNNHead
from hybnn.pipeline.config import TrainConfig
from hybnn.pipeline.extract import encode_to_codes
from hybnn.pipeline.fit import build_image_model, image_tensors
from hybnn.pipeline.train import evaluate_classifier, fit_classifier

Tensors = tuple[torch.Tensor, torch.Tensor]


def encoder_at(path: str | os.PathLike[str], device: str = "cpu") -> CodeEncoder:
    """The encoder in ``path``, loaded once per process and file version."""
    if not str(path):
        raise DataError("no encoder given: pass --encoder or let `hybnn federate` pretrain one")
    p = resolve(path)  # a directory, or a shipped name such as general
    stamp = (p / "weights.safetensors").stat().st_mtime_ns if p.is_dir() else 0
    return _load_encoder(str(p.resolve()), stamp, device)


@lru_cache(maxsize=4)
def _load_encoder(path: str, stamp: int, device: str) -> CodeEncoder:
    return open_encoder(path, device)


def check_encoder(encoder: CodeEncoder, expected: str, who: str = "this client") -> None:
    """Refuse to train with an encoder other than the federation's."""
    if expected and encoder.fingerprint != expected:
        raise FingerprintMismatch(
            f"{who} holds encoder {encoder.fingerprint[:12]} but the federation uses encoder "
            f"{expected[:12]}; every client must hold the same frozen encoder (copy the "
            "server's encoder directory, or point the node config 'encoder' at it)"
        )


def client_datasets(cfg: FedConfig, partition_id: int) -> tuple[Dataset, Dataset]:
    """This client's (train, test) partition of the task."""
    if not 0 <= partition_id < cfg.clients:
        raise DataError(f"partition id {partition_id} is outside 0..{cfg.clients - 1}")
    train, test = task_splits(cfg.data, cfg.task)
    tr, te = partition_indices(cfg)
    return train.subset(tr[partition_id]), test.subset(te[partition_id])


def in_label_space(data: Dataset, labels: Sequence[int], where: str) -> Dataset:
    """``data`` relabelled to the federation's output indices (``labels[i]`` -> ``i``);
    a DataError if it holds a label outside ``labels``."""
    original = np.asarray(data.label_space.labels, dtype=np.int64)[data.y]
    outside = sorted(set(np.unique(original).tolist()) - set(labels))
    if outside:
        raise DataError(f"{where} holds labels {outside[:10]} outside the federation's label "
                        f"space {list(labels)}")
    order = np.argsort(labels)  # original label -> output index, vectorized
    y = order[np.searchsorted(np.asarray(labels)[order], original)].astype(np.int64)
    names = dict(zip(data.label_space.labels, data.label_space.names, strict=True))
    space = LabelSpace(tuple(labels), tuple(names.get(v, str(v)) for v in labels))
    return Dataset(data.name, data.x, y, len(labels), None, data.info, space)


def node_source(path: str, named: dict[str, int] | None = None) -> Dataset:
    """A node's own data: an image folder (one subfolder per class, named by its label or
    by one of ``named``; :func:`hybnn.data.folder.load_folder`) or any source ``--data``
    takes."""
    return load_folder(path, named) if is_image_folder(path) else load_source(path)


@lru_cache(maxsize=4)
def node_datasets(path: str, labels: tuple[int, ...], test_fraction: float, seed: int,
                  names: tuple[tuple[str, int], ...] = ()) -> tuple[Dataset, Dataset]:
    """(train, test) of a node's own data (:func:`node_source`), in the federation's label
    space (``names``: label name -> label pairs); the test part is held out by a
    stratified, seeded split."""
    data = in_label_space(node_source(path, dict(names)), labels, f"this node's data {path}")
    train, test = stratified_split(data.y, test_fraction, seed)
    return data.subset(train), data.subset(test)


def server_dataset(cfg: FedConfig) -> Dataset | None:
    """The server's own test set with node data (``server_test``), or None without one."""
    if not cfg.local_data.server_test:
        return None
    return in_label_space(load_source(cfg.local_data.server_test), cfg.local_data.label_list(),
                          f"the server's test data {cfg.local_data.server_test}")


def partition_sizes(cfg: FedConfig) -> list[dict[str, Any]]:
    """Per client: train and test sizes and the class histogram of its training data."""
    train, _ = task_splits(cfg.data, cfg.task)
    tr, te = partition_indices(cfg)
    return [{"partition": i, "train": len(a), "test": len(b),
             "classes": np.bincount(train.y[a], minlength=train.num_classes).tolist()}
            for i, (a, b) in enumerate(zip(tr, te, strict=True))]


def as_tensors(cfg: FedConfig, data: Dataset, encoder: CodeEncoder | None) -> Tensors:
    """Model inputs: ±1 codes for hybnn (via the encoder), prepared images for the CNNs."""
    if cfg.model == "head":
        if encoder is None:
            raise DataError("the hybnn model needs an encoder")
        return encode_to_codes(encoder, data).tensors()
    return image_tensors(data, cfg.prep)


_TENSOR_CACHE: OrderedDict[tuple[Any, ...], tuple[Tensors, Tensors]] = OrderedDict()
TENSOR_CACHE_SIZE = 8  # a simulation worker serves several clients in turn


def client_tensors(cfg: FedConfig, partition_id: int, encoder: CodeEncoder | None,
                   node_data: str = "") -> tuple[Tensors, Tensors]:
    """(train, test) tensors of a client, kept for the next rounds in this process: of its
    own file ``node_data`` when the federation runs on node data, else of its partition."""
    key = (cfg.model, cfg.data, cfg.task, cfg.clients, cfg.partition, cfg.alpha,
           cfg.classes_per_client, cfg.seed, cfg.prep, partition_id,
           cfg.local_data, node_data,
           encoder.fingerprint if encoder is not None and cfg.model == "head" else "")
    if key not in _TENSOR_CACHE:
        if cfg.local_data.enabled:
            if not node_data:
                raise DataError("the federation runs on node data, but this node's config "
                                "names no data file: start it with --node-config "
                                "'data=\"/path/train.npz\"'")
            train, test = node_datasets(absolute_spec(node_data),
                                        tuple(cfg.local_data.label_list()),
                                        cfg.local_data.local_test, cfg.seed,
                                        tuple(cfg.local_data.named_labels().items()))
            _TENSOR_CACHE[key] = (as_tensors(cfg, train, encoder),
                                  as_tensors(cfg, test, encoder))
        else:  # rows of the task's tensors: one encoding of the task serves every partition
            if not 0 <= partition_id < cfg.clients:
                raise DataError(f"partition id {partition_id} is outside 0..{cfg.clients - 1}")
            tr, te = partition_indices(cfg)
            train_xy, test_xy = task_tensors(cfg, encoder)
            _TENSOR_CACHE[key] = (_rows(train_xy, tr[partition_id]),
                                  _rows(test_xy, te[partition_id]))
        while len(_TENSOR_CACHE) > TENSOR_CACHE_SIZE:
            _TENSOR_CACHE.popitem(last=False)
    _TENSOR_CACHE.move_to_end(key)
    return _TENSOR_CACHE[key]


_TASK_TENSORS: OrderedDict[tuple[Any, ...], tuple[Tensors, Tensors]] = OrderedDict()


def task_tensors(cfg: FedConfig, encoder: CodeEncoder | None) -> tuple[Tensors, Tensors]:
    """(train, test) tensors of the whole task, kept for the last two tasks and encoders of
    this process (a benchmark runs many partitions of one task)."""
    key = (cfg.model, cfg.data, cfg.task, cfg.prep,
           encoder.fingerprint if encoder is not None and cfg.model == "head" else "")
    if key not in _TASK_TENSORS:
        train, test = task_splits(cfg.data, cfg.task)
        _TASK_TENSORS[key] = (as_tensors(cfg, train, encoder), as_tensors(cfg, test, encoder))
        while len(_TASK_TENSORS) > 2:
            _TASK_TENSORS.popitem(last=False)
    _TASK_TENSORS.move_to_end(key)
    return _TASK_TENSORS[key]


def _rows(data: Tensors, index: np.ndarray) -> Tensors:
    rows = torch.from_numpy(np.asarray(index, dtype=np.int64))
    return data[0][rows], data[1][rows]


def build_model(cfg: FedConfig, encoder: CodeEncoder | None) -> nn.Module:
    """The federated model, initialised from the run's seed (identical on every machine)."""
    if cfg.model == "head":
        if encoder is None:
            raise DataError("the hybnn model needs an encoder")
        classes = (len(cfg.local_data.label_list()) if cfg.local_data.enabled
                   else task_splits(cfg.data, cfg.task)[0].num_classes)
        torch.manual_seed(cfg.seed)
        return BNNHead(encoder.latent_bits, classes, cfg.hidden_widths())
    train, _ = task_splits(cfg.data, cfg.task)
    torch.manual_seed(cfg.seed)
    return build_image_model(cfg.model, train)


def train_local(model: nn.Module, train: Tensors, cfg: FedConfig, server_round: int,
                partition_id: int, callbacks: Sequence[Callback] = ()) -> History:
    """``local_epochs`` of the centralized trainer at this round's learning rate (with
    ``callbacks``, e.g. FedProx's :class:`~hybnn.federated.flower_strategies.ProximalTerm`)."""
    config = TrainConfig(epochs=cfg.local_epochs, batch_size=cfg.batch_size,
                         lr=cfg.round_lr(server_round), schedule="constant",
                         seed=cfg.seed * 1_000_003 + server_round * 1009 + partition_id,
                         device=cfg.device)
    return fit_classifier(model, train, None, config, callbacks=list(callbacks),
                          progress=False, desc=f"client {partition_id}")


def evaluate(model: nn.Module, data: Tensors) -> tuple[float, float]:
    """(loss, accuracy); (nan, nan) on an empty set."""
    if len(data[1]) == 0:
        return float("nan"), float("nan")
    return evaluate_classifier(model, *data)


def restore_latent(global_state: dict[str, np.ndarray], own: dict[str, np.ndarray] | None,
                   layout: Layout) -> dict[str, np.ndarray]:
    """1bit and xor: the global signs with this client's own latent magnitudes where it has
    them.

    A decoded 1bit model (the downlink of both) carries ``scale · sign(w)``: right for
    inference, but a client resuming training from it would lose every weight's distance
    from a sign flip. The client keeps that distance (its latent magnitudes after its last
    local training) and takes only the signs from the server.
    """
    if not own:
        return global_state
    state = dict(global_state)
    for k, is_binary in zip(layout.keys, layout.binary, strict=True):
        if is_binary and k in own and own[k].shape == state[k].shape:
            state[k] = np.where(state[k] >= 0, 1.0, -1.0).astype(np.float32) * np.abs(own[k])
    return state
