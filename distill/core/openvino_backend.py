"""The OpenVINO backend of the one scorer (:class:`~distill.core.cross_encoder.CrossEncoderScorer`).

It is a :data:`~distill.core.cross_encoder.Backend` like the torch and ONNX Runtime ones: padded int64 arrays in,
one float32 logit per pair out. Tokenisation, token caps and length-bucketed batches are the scorer's, so a pair is
cut and batched exactly as training evaluated it, the export gates scored it and the ranker serves it.

The model is an ``.onnx`` file or an OpenVINO IR (``.xml`` with its ``.bin`` beside it). The precision is chosen
when the model is compiled (``INFERENCE_PRECISION_HINT``), always explicitly: OpenVINO's own default on a CPU with
bf16 units is bf16, and a recipe gated in fp32 must not be served in bf16.

* ``fp32``: f32 everywhere;
* ``bf16``: matrix products in bf16 (AMX or AVX512-BF16; see :mod:`distill.core.isa`), accumulated in f32;
* ``int8``: an IR quantised by NNCF (its FakeQuantize nodes run in int8), the rest in f32.

Threads and streams follow :func:`~distill.core.cross_encoder.session_layout`'s rule: its ``sessions`` become
OpenVINO streams of one compiled model (the weights are held once, not once per session as ONNX Runtime does),
its threads per session the threads per stream, and each backend of a pool runs its own infer request.

Importing this module needs only numpy; ``openvino`` is imported when a model is loaded
(``pip install 'distilrank[openvino]'``, which brings no torch).
"""

from __future__ import annotations

import logging
import os
import queue
from pathlib import Path
from typing import Any, Literal

import numpy as np

from distill.core.errors import ConfigError, DataError, MissingExtraError

__all__ = ["PRECISIONS", "OpenVinoBackend", "Precision", "import_openvino", "inference_precision"]

logger = logging.getLogger(__name__)

Precision = Literal["fp32", "bf16", "int8"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "int8")
#: INFERENCE_PRECISION_HINT per precision (int8: the layers NNCF left unquantised run in f32)
_HINT = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}


def inference_precision(precision: str) -> str:
    """OpenVINO's ``INFERENCE_PRECISION_HINT`` for a card's precision."""
    if precision not in _HINT:
        raise ConfigError(f"precision={precision!r}: the OpenVINO backend runs {', '.join(PRECISIONS)}")
    return _HINT[precision]


def import_openvino() -> Any:
    """The ``openvino`` module, or the :class:`MissingExtraError` that names the extra to install."""
    try:
        import openvino as ov
    except ImportError as exc:
        raise MissingExtraError("OpenVINO needs the openvino package: pip install 'distilrank[openvino]'",
                                name=exc.name) from exc
    return ov


class OpenVinoBackend:
    """One infer request at a time over a compiled model; thread-safe (each concurrent call gets its own request)."""

    def __init__(self, compiled: Any, precision: str, streams: int = 1, threads: int | None = None):
        self.compiled = compiled
        self.precision = precision
        self.streams = streams
        self.threads = threads
        self.input_names = [p.get_any_name() for p in compiled.inputs]
        self._output = compiled.output(0)
        self._idle: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._idle.put(compiled.create_infer_request())

    @property
    def providers(self) -> list[str]:
        """What ``/info`` reports: the runtime, device and precision actually compiled."""
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        name = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
        return [f"OpenVINO CPU ({self.precision}: inference precision {name}, {self.streams} stream(s) x "
                f"{self.threads} thread(s))"]

    @classmethod
    def load(cls, model_path: str | os.PathLike[str], precision: str = "fp32", threads: int | None = None,
             streams: int = 1) -> OpenVinoBackend:
        """Compile ``model_path`` for the CPU with ``streams`` streams of ``threads`` threads each (default: the
        cores shared among the streams)."""
        return cls.load_pool(model_path, streams, threads, precision)[0]

    @classmethod
    def load_pool(cls, model_path: str | os.PathLike[str], sessions: int, threads: int | None = None,
                  precision: str = "fp32") -> list[OpenVinoBackend]:
        """``sessions`` backends over one compiled model with that many streams (see
        :func:`~distill.core.cross_encoder.session_layout`), ``threads`` per stream."""
        if sessions < 1:
            raise ConfigError(f"sessions={sessions}: use a positive number of OpenVINO streams")
        cores = os.cpu_count() or 1
        per_stream = threads or max(1, cores // sessions)
        compiled = compile_model(model_path, precision, per_stream * sessions, sessions)
        return [cls(compiled, precision, sessions, per_stream) for _ in range(sessions)]

    def __call__(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        try:
            request = self._idle.get_nowait()
        except queue.Empty:
            request = self.compiled.create_infer_request()
        try:
            result = request.infer({name: batch[name] for name in self.input_names})
            # the output tensor is the request's own buffer, overwritten by its next call: copy it out
            logits = np.array(result[self._output], dtype=np.float32, copy=True)
        finally:
            self._idle.put(request)
        if logits.ndim == 2 and logits.shape[1] == 1:
            return logits[:, 0]
        if logits.ndim == 1:
            return logits
        raise ConfigError(f"the model outputs logits of shape {logits.shape}; a cross-encoder scorer needs one logit "
                          "per pair")


def compile_model(model_path: str | os.PathLike[str], precision: str, threads: int, streams: int) -> Any:
    """The model compiled for the CPU: explicit precision hint, ``streams`` streams, ``threads`` threads in all, the
    latency hint off (it would choose streams itself) and no core pinning (the cores are shared with the tokenizer,
    the event loop and, on a busy host, other processes)."""
    ov = import_openvino()
    path = Path(model_path)
    config = {"INFERENCE_PRECISION_HINT": inference_precision(precision), "NUM_STREAMS": str(streams),
              "INFERENCE_NUM_THREADS": str(threads), "ENABLE_CPU_PINNING": "NO"}
    try:
        core = ov.Core()
        compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
    except Exception as exc:  # openvino raises RuntimeError subclasses of its own
        raise DataError(f"openvino cannot load the model ({type(exc).__name__}: {str(exc)[:300]}); re-export it",
                        path=path) from exc
    logger.debug("compiled %s for CPU: %s", path, config)
    return compiled
