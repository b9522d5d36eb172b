"""OpenVINO recipes of the exporter (private helpers): the ONNX graph converted to an OpenVINO IR, and NNCF's
post-training int8 quantisation of that IR.

The IR is converted from the plain Optimum export, not from ONNX Runtime's optimised graph: that one holds
``com.microsoft`` fused operators, while OpenVINO fuses the plain graph itself. Its weights are kept in f32
(``compress_to_fp16=False``): the f32 recipe must run in f32, and bf16 is chosen when the model is compiled
(:mod:`distill.core.openvino_backend`), so the f32 and bf16 recipes share one IR.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from distill.core.errors import MissingExtraError
from distill.core.openvino_backend import import_openvino

logger = logging.getLogger(__name__)

#: file stems of the IRs an export ships (``.xml`` graph + ``.bin`` weights)
IR_F32 = "openvino_model"
IR_INT8 = "openvino_model_int8"


def ir_files(xml: Path) -> list[Path]:
    """The files of one IR: the graph and its weights."""
    return [xml, xml.with_suffix(".bin")]


def convert_to_ir(onnx_path: Path, out_dir: Path, stem: str = IR_F32) -> Path:
    """``onnx_path`` as an OpenVINO IR with f32 weights in ``out_dir``; returns the ``.xml`` path."""
    ov = import_openvino()
    out_dir.mkdir(parents=True, exist_ok=True)
    xml = out_dir / f"{stem}.xml"
    ov.save_model(ov.convert_model(str(onnx_path)), str(xml), compress_to_fp16=False)
    return xml


def quantize_openvino_int8(ir_path: Path, out_dir: Path, calibration: Sequence[dict[str, np.ndarray]],
                  stem: str = IR_INT8) -> Path:
    """NNCF post-training quantisation (static: activation ranges from ``calibration``, real tokenised pairs) of the
    IR at ``ir_path``, with NNCF's transformer preset (it keeps the sensitive operations in f32). Fixed activation
    scales make the scores batch-invariant. Returns the quantised ``.xml``."""
    ov = import_openvino()
    try:
        import nncf
    except ImportError as exc:
        raise MissingExtraError("OpenVINO int8 needs NNCF: pip install 'distilrank[export,openvino]'",
                                name=exc.name) from exc
    if not calibration:
        raise ValueError("OpenVINO int8 needs at least one calibration batch")
    model = ov.Core().read_model(str(ir_path))
    names = [p.get_any_name() for p in model.inputs]
    dataset = nncf.Dataset(list(calibration), lambda batch: {n: batch[n] for n in names})
    quantized = nncf.quantize(model, dataset, model_type=nncf.ModelType.TRANSFORMER, subset_size=len(calibration))
    out_dir.mkdir(parents=True, exist_ok=True)
    xml = out_dir / f"{stem}.xml"
    ov.save_model(quantized, str(xml), compress_to_fp16=False)
    return xml
