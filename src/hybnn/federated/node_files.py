"""A federation's partitions written as node files: one data file per node.

``write_node_files`` cuts the training split of a task exactly as a federation on ``--data``
does (:func:`hybnn.federated.partition.partition`: IID, Dirichlet(α) or k classes per
client, from the seed) and writes node i's share as ``node-<i>.npz`` (arrays ``x``, ``y``
with the source's own labels, and ``names`` when the labels are 0..k-1). The task's test
split becomes ``server-test.npz``, the server's own held-out set. ``partitions.json`` records
the settings, each file's sample count, class histogram and SHA-256.

A federation on these files (``hybnn federate --node-data node-*.npz --server-test
server-test.npz``) runs the client code of a deployment across machines: each node reads
its own file and holds out its own test part, whether it is a virtual node of the
simulation or a SuperNode on another machine. Simulation and deployment then differ only in
transport.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hybnn.data.dataset import Dataset
from hybnn.errors import DataError
from hybnn.federated.config import FedConfig
from hybnn.federated.partition import partition_indices, task_splits

MANIFEST = "partitions.json"
SERVER_TEST = "server-test.npz"


@dataclass(frozen=True)
class NodeFiles:
    """What :func:`write_node_files` wrote: one file per node, the server's test file, the
    label space the files share, and the manifest (``partitions.json``'s content)."""

    root: Path
    nodes: list[Path]
    server_test: Path
    labels: list[int]
    manifest: dict[str, Any]

    def federate_flags(self) -> list[str]:
        """The ``hybnn federate`` flags of a federation on these files."""
        return ["--node-data", *map(str, self.nodes), "--server-test", str(self.server_test),
                "--labels", ",".join(map(str, self.labels))]


def node_file_name(i: int) -> str:
    return f"node-{i}.npz"


def write_node_files(cfg: FedConfig, out: str | os.PathLike[str]) -> NodeFiles:
    """Write ``cfg``'s partition of its task into the new directory ``out`` (refused if it
    holds anything). The files appear together or not at all: they are written into a
    hidden sibling first and renamed into place."""
    root = Path(out)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise DataError(f"{root} already exists and is not an empty directory: node files go "
                        "into a new one")
    train, test = task_splits(cfg.data, cfg.task)
    parts, _ = partition_indices(cfg)
    labels = list(train.label_space.labels)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        nodes = []
        for i, rows in enumerate(parts):
            entry = _write(tmp / node_file_name(i), train.subset(rows))
            nodes.append({"node": i, **entry,
                          "classes": np.bincount(train.y[rows],
                                                 minlength=train.num_classes).tolist()})
        manifest = {"data": cfg.data, "task": cfg.task, "clients": cfg.clients,
                    "partition": cfg.partition, "alpha": cfg.alpha,
                    "classes_per_client": cfg.classes_per_client, "seed": cfg.seed,
                    "labels": labels, "names": list(train.label_space.names),
                    "nodes": nodes, "server_test": _write(tmp / SERVER_TEST, test)}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        if root.exists():
            root.rmdir()  # empty, checked above
        os.rename(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return NodeFiles(root, [root / node_file_name(i) for i in range(len(parts))],
                     root / SERVER_TEST, labels, manifest)


def _write(path: Path, data: Dataset) -> dict[str, Any]:
    """``data`` as an .npz a node reads back exactly (uint8 pixels when they are whole
    steps of 1/255, which the loader scales back to the same float32 values)."""
    x = data.x
    pixels = np.round(x * 255.0)
    if x.size and pixels.min() >= 0 and pixels.max() <= 255 and np.array_equal(
            pixels.astype(np.uint8).astype(np.float32) / 255.0, x):
        x = pixels.astype(np.uint8)
    space = data.label_space
    y = np.asarray(space.labels, dtype=np.int64)[data.y]
    arrays: dict[str, np.ndarray] = {"x": x, "y": y}
    if list(space.labels) == list(range(len(space.labels))):
        arrays["names"] = np.asarray(space.names, dtype=str)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    path.write_bytes(buffer.getvalue())
    return {"file": path.name, "samples": len(data),
            "sha256": hashlib.sha256(buffer.getvalue()).hexdigest()}
