"""An encoder graph in an ONNX Runtime session, threads pinned, shapes checked.

The graph is data, not a program: :func:`hybnn.onnxgraph.rules.check_graph` accepts it
(the ops hybnn exports, bounded sizes) before ONNX Runtime sees it. Each run takes at most
the images the graph's size allows, is stopped after :data:`RUN_SECONDS` (by
:data:`WATCHDOG`), and must return one row of ``latent_bits`` float32 logits per image;
anything else is an ArtifactError.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from typing import Any

import numpy as np

from hybnn.errors import ArtifactError, DataError, HybnnError
from hybnn.onnxgraph.rules import check_graph

RUN_SECONDS = 60.0  # one run of at most CheckedGraph.batch images
POLL_SECONDS = 0.5  # the watchdog's longest sleep: a run is stopped at most this late
LOG_FATAL_ONLY = 4  # ONNX Runtime's own log lines would add to the CLI's one error line


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
    # the bytes are the checked ONNX protobuf: never read them as another format
    opts.add_session_config_entry("session.load_model_format", "ONNX")
    opts.log_severity_level = LOG_FATAL_ONLY  # its errors come back as exceptions
    return opts


def make_session(onnx_bytes: bytes, threads: int = 1) -> Any:
    """A CPU InferenceSession of ``onnx_bytes`` as they are (ONNX Runtime parses and checks
    the graph); a graph read from a file goes through :class:`OnnxEncoder`, which checks it
    first."""
    ort = onnxruntime()

    return ort.InferenceSession(onnx_bytes, sess_options=session_options(threads),
                                providers=["CPUExecutionProvider"])


class OnnxEncoder:
    """Images (N, C, H, W) float32 -> bit logits (N, latent_bits) float32.

    ``onnx`` is checked by :func:`~hybnn.onnxgraph.rules.check_graph`, then parsed and
    checked by ONNX Runtime, its one input and one output by name, element type and shape."""

    def __init__(self, onnx: bytes, input_name: str, output_name: str,
                 input_shape: tuple[int, ...], latent_bits: int, threads: int = 1,
                 where: str = "bundle") -> None:
        checked = check_graph(onnx, input_name, output_name, tuple(input_shape), latent_bits,
                              where)
        try:
            self.session = make_session(checked.onnx, threads)
        except HybnnError:
            raise
        except Exception as exc:  # ORT raises its own classes (Fail, InvalidGraph, ...)
            raise ArtifactError(f"{where}: ONNX Runtime refuses the encoder: "
                                f"{_first_line(exc)}") from None
        self._check(self.session.get_inputs(), input_name, input_shape, "input", where)
        self._check(self.session.get_outputs(), output_name, (latent_bits,), "output", where)
        self.input_name = input_name
        self.output_names = [output_name]
        self.latent_bits = latent_bits
        self.batch = checked.batch  # images a run takes: the graph's memory bound
        self.where = where

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
        """Bit logits of validated images (bit = logit >= 0), ``batch`` images a run."""
        if len(images) <= self.batch:
            return self._run(images)
        return np.concatenate([self._run(images[i:i + self.batch])
                               for i in range(0, len(images), self.batch)])

    def _run(self, images: np.ndarray) -> np.ndarray:
        """One run, stopped after RUN_SECONDS; its output checked against its input."""
        n = len(images)
        if not n:
            return np.zeros((0, self.latent_bits), np.float32)
        options = onnxruntime().RunOptions()
        options.log_severity_level = LOG_FATAL_ONLY
        run = WATCHDOG.watch(options, RUN_SECONDS)
        try:
            out = self.session.run(self.output_names, {self.input_name: images}, options)
        except Exception as exc:  # ORT raises its own classes (Fail, RuntimeException, ...)
            if options.terminate:
                raise ArtifactError(f"{self.where}: the encoder ran longer than {RUN_SECONDS:g} "
                                    f"s on {n} images and was stopped") from None
            raise ArtifactError(f"{self.where}: ONNX Runtime failed running the encoder: "
                                f"{_first_line(exc)}") from None
        finally:
            WATCHDOG.release(run)
        z = out[0] if isinstance(out, list) and len(out) == 1 else None
        if not (isinstance(z, np.ndarray) and z.dtype == np.float32
                and z.shape == (n, self.latent_bits)):
            got = f"{z.dtype} {z.shape}" if isinstance(z, np.ndarray) else type(z).__name__
            raise ArtifactError(f"{self.where}: the encoder returned {got} for {n} images, "
                                f"expected float32 ({n}, {self.latent_bits})")
        return np.ascontiguousarray(z)

    def codes(self, images: np.ndarray, batch_size: int) -> np.ndarray:
        """Bool codes (N, latent_bits) of validated images, ``batch_size`` images a run."""
        out = [self.logits(np.ascontiguousarray(images[i:i + batch_size], dtype=np.float32))
               >= 0 for i in range(0, len(images), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.latent_bits), dtype=bool)


class Watchdog:
    """One daemon thread for every run: it sets ``terminate`` on the ``RunOptions`` of a run
    past its deadline, and ONNX Runtime stops that run between two nodes. (A timer thread a
    run would cost more than a small encoder's whole run.)"""

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)  # a child has no watchdog thread

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[int, tuple[float, Any]] = {}
        self._keys = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, options: Any, seconds: float) -> int:
        """Watch a run with ``options`` for ``seconds``; the key to :meth:`release` it by."""
        with self._lock:
            key = next(self._keys)
            self._runs[key] = (time.monotonic() + seconds, options)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="hybnn-run-watchdog",
                                                daemon=True)
                self._thread.start()
        return key

    def release(self, key: int) -> None:
        with self._lock:
            self._runs.pop(key, None)

    def _loop(self) -> None:
        while True:
            with self._lock:
                now = time.monotonic()
                for key, (deadline, options) in list(self._runs.items()):
                    if deadline <= now:
                        options.terminate = True
                        del self._runs[key]
                wake = min((d for d, _ in self._runs.values()), default=now + POLL_SECONDS)
            time.sleep(min(max(wake - now, 0.001), POLL_SECONDS))


WATCHDOG = Watchdog()


def _first_line(exc: BaseException) -> str:
    """The first line of ONNX Runtime's message, escaped: it quotes the graph's own names."""
    line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in line)
