"""The bundle's encoder in an ONNX Runtime session, threads pinned, shapes checked."""

from __future__ import annotations

from typing import Any

import numpy as np

from hybnn.bundle.format import BundleParts
from hybnn.errors import ArtifactError, DataError, HybnnError


def onnxruntime() -> Any:
    """The ``onnxruntime`` module, or one clear error naming the extra that installs it."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise DataError("ONNX Runtime is not installed: pip install 'hybnn[onnx]'") from None
    return ort


def session_options(threads: int) -> Any:
    """ONNX Runtime options: ``threads`` intra- and inter-op threads, sequential, all graph
    optimizations."""
    ort = onnxruntime()

    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = threads
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return opts


def make_session(onnx_bytes: bytes, threads: int = 1) -> Any:
    """A CPU InferenceSession of ``onnx_bytes`` (ONNX Runtime parses and checks the graph)."""
    ort = onnxruntime()

    return ort.InferenceSession(onnx_bytes, sess_options=session_options(threads),
                                providers=["CPUExecutionProvider"])


class OnnxEncoder:
    """Images (N, C, H, W) float32 -> bit logits (N, latent_bits) float32.

    ``onnx`` is parsed and checked by ONNX Runtime, its one input and one output by name,
    element type and shape; :meth:`of_bundle` takes them from a validated bundle."""

    def __init__(self, onnx: bytes, input_name: str, output_name: str,
                 input_shape: tuple[int, ...], latent_bits: int, threads: int = 1,
                 where: str = "bundle") -> None:
        try:
            self.session = make_session(onnx, threads)
        except HybnnError:
            raise
        except Exception as exc:  # ORT raises its own classes (Fail, InvalidGraph, ...)
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ArtifactError(f"{where}: ONNX Runtime refuses the encoder: {first}") from None
        self._check(self.session.get_inputs(), input_name, input_shape, "input", where)
        self._check(self.session.get_outputs(), output_name, (latent_bits,), "output", where)
        self.input_name = input_name
        self.output_names = [output_name]
        self.latent_bits = latent_bits

    @classmethod
    def of_bundle(cls, parts: BundleParts, threads: int = 1,
                  where: str = "bundle") -> OnnxEncoder:
        enc = parts.encoder
        return cls(parts.onnx, enc["input_name"], enc["output_name"], parts.input_shape,
                   parts.latent_bits, threads, where)

    @staticmethod
    def _check(values: list[Any], name: str, dims: tuple[int, ...], kind: str,
               where: str) -> None:
        if len(values) != 1 or values[0].name != name:
            raise ArtifactError(f"{where}: the encoder must have one {kind} named {name!r}, "
                                f"it has {[v.name for v in values]}")
        shape = list(values[0].shape)
        if (values[0].type != "tensor(float)" or shape[1:] != list(dims)
                or isinstance(shape[0], int)):
            raise ArtifactError(f"{where}: the encoder's {kind} is {values[0].type} {shape}, "
                                f"expected float [batch, {', '.join(map(str, dims))}]")

    def logits(self, images: np.ndarray) -> np.ndarray:
        """Bit logits of validated images (bit = logit >= 0)."""
        out = self.session.run(self.output_names, {self.input_name: images})[0]
        return np.ascontiguousarray(out, dtype=np.float32)

    def codes(self, images: np.ndarray, batch_size: int) -> np.ndarray:
        """Bool codes (N, latent_bits) of validated images, ``batch_size`` images a run."""
        out = [self.logits(np.ascontiguousarray(images[i:i + batch_size], dtype=np.float32))
               >= 0 for i in range(0, len(images), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.latent_bits), dtype=bool)
