"""Optimum export, graph optimisation and onnxruntime int8 quantisation (private helpers).

Why onnxruntime's quantiser and not Optimum's ``ORTQuantizer``: on an O2/O3-optimised graph the
latter fails ("Unable to find data type for weight_name"); ``quantize_dynamic``/``quantize_static``
with ``DefaultTensorType=FLOAT`` handle the fused operators.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from distill.core.errors import MissingExtraError

logger = logging.getLogger(__name__)

_LEVELS = {"O1": 1, "O2": 2, "O3": 99}


def export_fp32(model_dir: Path, out_dir: Path) -> Path:
    """Export the HF student to ``out_dir/model.onnx`` (plus config.json); returns the onnx path."""
    try:
        from optimum.onnxruntime import ORTModelForSequenceClassification
    except ImportError as exc:  # optimum-onnx is the [export] extra
        raise MissingExtraError("ONNX export needs optimum-onnx: pip install 'distilrank[export]'",
                                name=exc.name) from exc
    model = ORTModelForSequenceClassification.from_pretrained(str(model_dir), export=True)
    model.save_pretrained(str(out_dir))
    return out_dir / "model.onnx"


def optimize(fp32_dir: Path, level: str, out_dir: Path) -> Path:
    """ORTOptimizer at ``level`` (O1 basic, O2 + fusions, O3 + GELU approximation), CPU target."""
    from optimum.onnxruntime import ORTModelForSequenceClassification, ORTOptimizer
    from optimum.onnxruntime.configuration import OptimizationConfig

    model = ORTModelForSequenceClassification.from_pretrained(str(fp32_dir))
    optimizer = ORTOptimizer.from_pretrained(model)
    cfg = OptimizationConfig(optimization_level=_LEVELS[level], optimize_for_gpu=False,
                             enable_gelu_approximation=level == "O3")
    optimizer.optimize(cfg, save_dir=str(out_dir))
    return out_dir / "model_optimized.onnx"


def _weight_types(isa: str):  # -> tuple[QuantType, QuantType, bool]
    from onnxruntime.quantization import QuantType

    # Optimum's AutoQuantizationConfig recipes: u8 weights on AVX2 (u8s8 products can saturate
    # without VNNI), s8 weights on AVX-512/VNNI and ARM; activations u8 everywhere.
    if isa == "avx2":
        return QuantType.QUInt8, QuantType.QUInt8, False
    return QuantType.QUInt8, QuantType.QInt8, False


def quantize_dynamic_int8(src: Path, dst: Path, isa: str, per_channel: bool, op_types: Sequence[str] | None) -> Path:
    import onnx
    from onnxruntime.quantization import quantize_dynamic

    _, weight_type, reduce_range = _weight_types(isa)
    quantize_dynamic(str(src), str(dst), per_channel=per_channel, reduce_range=reduce_range, weight_type=weight_type,
                     op_types_to_quantize=list(op_types) if op_types else None,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    return dst


class _CalibrationReader:
    """Feeds real tokenised (query, passage) batches to the static-quantisation calibrator."""

    def __init__(self, batches: list[dict[str, np.ndarray]]):
        self._batches = batches
        self._it: Iterator[dict[str, np.ndarray]] = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self._batches)


def sensitive_nodes(onnx_path: Path) -> list[str]:
    """MatMuls kept in fp32 by the ``keep_edges`` recipe: the first and the last encoder layer (the
    embedding output and the representation the head reads) and every attention-score product
    (activation x activation, whose ranges vary most per input). Names follow the Optimum/torch export
    (``/bert/encoder/layer.N/...``); a graph without them gives an empty list."""
    import re

    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    layer = re.compile(r"/encoder/layer\.(\d+)/")
    matmuls = [n.name for n in graph.node if n.op_type == "MatMul"]
    layers = sorted({int(m.group(1)) for n in matmuls if (m := layer.search(n))})
    if not layers:
        return []
    edges = {layers[0], layers[-1]}
    out = []
    for name in matmuls:
        m = layer.search(name)
        attention_product = "/attention/self/MatMul" in name
        if m and (int(m.group(1)) in edges or attention_product):
            out.append(name)
    return out


def quantize_static_int8(src: Path, dst: Path, isa: str, per_channel: bool, op_types: Sequence[str] | None,
                         calibration: list[dict[str, np.ndarray]], exclude: Sequence[str] = ()) -> Path:
    """Calibrated (static) int8 in QDQ format: activation scales are fixed, so scores are batch-invariant.
    ``exclude``: node names left in fp32 (see :func:`sensitive_nodes`)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static

    activation_type, weight_type, reduce_range = _weight_types(isa)
    if not calibration:
        raise ValueError("static int8 needs at least one calibration batch")
    tmp = dst.with_name(dst.stem + ".calib_tmp")
    tmp.mkdir(exist_ok=True)
    try:
        quantize_static(str(src), str(dst), _CalibrationReader(calibration), quant_format=QuantFormat.QDQ,
                        per_channel=per_channel, reduce_range=reduce_range, activation_type=activation_type,
                        weight_type=weight_type, op_types_to_quantize=list(op_types) if op_types else None,
                        nodes_to_exclude=list(exclude) or None, calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT, "ActivationSymmetric": False,
                                       "WeightSymmetric": True},
                        calibration_providers=["CPUExecutionProvider"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dst
