"""Compression and export: Optimum ONNX, graph optimisation, gated int8, OpenVINO recipes chosen per machine, model
card, report.

Imports here are lightweight (no torch/onnxruntime); the heavy work is imported on use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from distill.core.model_card import MODEL_CARD, ModelCardError, file_hashes, load_model_card, write_model_card
from export.config import ExportConfig, GateTolerances

if TYPE_CHECKING:  # pragma: no cover
    from export._candidates import CandidateLists, eval_candidates
    from export._isa import resolve_isa
    from export._onnx import (
        export_fp32,
        optimize,
        quantize_dynamic_int8,
        quantize_static_int8,
        sensitive_nodes,
    )
    from export._openvino import convert_to_ir, quantize_openvino_int8
    from export.exporter import EvalData, calibration_batches, calibration_pairs, export_model
    from export.layers import keep_layers
    from export.report import ReportConfig, compression_report
    from export.scorers import onnx_scorer, openvino_scorer, torch_scorer

__all__ = [
    "MODEL_CARD",
    "CandidateLists",
    "EvalData",
    "ExportConfig",
    "GateTolerances",
    "ModelCardError",
    "ReportConfig",
    "calibration_batches",
    "calibration_pairs",
    "compression_report",
    "convert_to_ir",
    "eval_candidates",
    "export_fp32",
    "export_model",
    "file_hashes",
    "keep_layers",
    "onnx_scorer",
    "optimize",
    "quantize_dynamic_int8",
    "quantize_openvino_int8",
    "quantize_static_int8",
    "resolve_isa",
    "sensitive_nodes",
    "torch_scorer",
    "openvino_scorer",
    "load_model_card",
    "write_model_card",
]

_LAZY = {"EvalData": "export.exporter", "export_model": "export.exporter", "calibration_pairs": "export.exporter",
         "calibration_batches": "export.exporter", "keep_layers": "export.layers",
         "ReportConfig": "export.report", "compression_report": "export.report",
         # (query, candidates) lists from files: the gates' and the int8 calibration's data
         "CandidateLists": "export._candidates", "eval_candidates": "export._candidates",
         "onnx_scorer": "export.scorers", "torch_scorer": "export.scorers", "openvino_scorer": "export.scorers",
         # the building blocks of an export, for benches that compose their own variants
         "export_fp32": "export._onnx", "optimize": "export._onnx", "quantize_static_int8": "export._onnx",
         "quantize_dynamic_int8": "export._onnx",
         "sensitive_nodes": "export._onnx", "resolve_isa": "export._isa",
         # OpenVINO recipes: the IR and its NNCF int8 (the [openvino] extra; NNCF comes with [export])
         "convert_to_ir": "export._openvino", "quantize_openvino_int8": "export._openvino"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        from distill.core.lazy import missing_extra_error

        try:
            module = importlib.import_module(_LAZY[name])
        except ModuleNotFoundError as exc:
            err = missing_extra_error(exc, "export", f"export.{name}")
            if err is None:
                raise
            raise err from exc
        return getattr(module, name)
    raise AttributeError(f"module 'export' has no attribute {name!r}")
