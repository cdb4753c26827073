"""The public API: one function per ``hybnn`` command, each taking a typed options object.

>>> from hybnn import api
>>> enc = api.pretrain(api.PretrainOptions(data="mnist-5k", out="runs/encoder"))  # doctest: +SKIP

Options (:mod:`hybnn.api.options`) import no torch; the functions
(:mod:`hybnn.api.commands`) are loaded on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from hybnn.api.options import (
    ContinualOptions,
    DistillOptions,
    EvaluateOptions,
    ExportOptions,
    ExtractOptions,
    FederateOptions,
    PartitionOptions,
    PkiOptions,
    PredictOptions,
    PretrainOptions,
    QuantizeOptions,
    RecodeOptions,
    ReproduceOptions,
    StudyOptions,
    SummaryOptions,
    TrainOptions,
)

COMMANDS = ("pretrain", "distill", "quantize", "recode", "extract", "train", "evaluate", "predict",
            "export", "summary", "reproduce", "federate", "study_rebnn", "continual", "pki",
            "partition")

__all__ = [
    "COMMANDS",
    "ContinualOptions",
    "DistillOptions",
    "EvaluateOptions",
    "ExportOptions",
    "ExtractOptions",
    "FederateOptions",
    "PartitionOptions",
    "PkiOptions",
    "PredictOptions",
    "PretrainOptions",
    "QuantizeOptions",
    "RecodeOptions",
    "ReproduceOptions",
    "StudyOptions",
    "SummaryOptions",
    "TrainOptions",
    *COMMANDS,
]


def __getattr__(name: str) -> Any:
    if name == "predict":  # bundles run without torch
        return import_module("hybnn.api.bundle_predict").predict
    if name == "pki":  # certificates need neither torch nor Flower
        return import_module("hybnn.api.certificates").pki
    if name == "partition":  # node files need neither torch nor Flower
        return import_module("hybnn.api.node_files").partition
    if name in COMMANDS:
        return getattr(import_module("hybnn.api.commands"), name)
    raise AttributeError(f"module 'hybnn.api' has no attribute {name!r}")
