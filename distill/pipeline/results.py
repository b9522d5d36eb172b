"""Typed results of the pipeline's stages, built from each stage's verified outputs (``Stage.load``): the same
value whether the stage ran now or was reused, and the only way later stages and the report read them."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.core.interpolation import Interpolation

__all__ = ["ServeCandidate", "TeacherFit", "read_json_object"]


def read_json_object(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


@dataclass(frozen=True)
class TeacherFit:
    """The labelling teacher as the label stage fitted it: the source, and for an ensemble its weights and how
    they were chosen (``ensemble.json``); the dense member's fine-tuning and the LLM-vs-ensemble check when those
    ran."""

    source: str
    weights: dict[str, float] | None = None
    members: list[str] | None = None
    fitted_on: str | None = None
    n_fit_queries: int | None = None
    dev_ndcg10_alone: dict[str, float] | None = None
    dev_ndcg10_ensemble: float | None = None
    dense_fine_tuned: dict[str, Any] | None = None
    ensemble_check: dict[str, Any] | None = None

    @classmethod
    def read(cls, label_dir: Path, source: str, dense_ft_info: Path | None = None) -> TeacherFit:
        from distill.teacher.label import ENSEMBLE_CHECK_FILE, ENSEMBLE_FILE

        fit = read_json_object(label_dir / ENSEMBLE_FILE) if (label_dir / ENSEMBLE_FILE).is_file() else {}
        check = label_dir / ENSEMBLE_CHECK_FILE
        return cls(source=source, weights=fit.get("weights"), members=fit.get("members"),
                   fitted_on=fit.get("fitted_on"), n_fit_queries=fit.get("n_fit_queries"),
                   dev_ndcg10_alone=fit.get("dev_ndcg10_alone"), dev_ndcg10_ensemble=fit.get("dev_ndcg10_ensemble"),
                   dense_fine_tuned=read_json_object(dense_ft_info) if dense_ft_info is not None else None,
                   ensemble_check=read_json_object(check) if check.is_file() else None)

    def positive_weights(self) -> dict[str, float]:
        return {m: w for m, w in (self.weights or {}).items() if w > 0}

    def to_dict(self) -> dict[str, Any]:
        """The report's ``teacher`` object: the fields that are set."""
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class ServeCandidate:
    """One exported variant as the serve stage measured it: served exactly as ``distilrank serve`` runs it, its
    blend tuned on dev with its own scores, and whether it was kept (``decision`` says why)."""

    variant: str
    dir: str
    precision: str
    layers: int | None
    dev_ndcg10_interpolated: float
    dev_ndcg10_student: float
    dev_ndcg10_first_stage: float
    pairs_per_s: float
    interpolation: Interpolation
    decision: str = ""
    kept: bool = False

    _KEYS = {"dev_ndcg10_interpolated": "dev_ndcg@10_interpolated", "dev_ndcg10_student": "dev_ndcg@10_student",
             "dev_ndcg10_first_stage": "dev_ndcg@10_first_stage"}

    def to_dict(self) -> dict[str, Any]:
        """``candidates.json`` and the report's ``serve_candidates``: metric keys spelled as in the report."""
        out: dict[str, Any] = {self._KEYS.get(k, k): v for k, v in self.__dict__.items()}
        out["interpolation"] = self.interpolation.to_dict()
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ServeCandidate:
        names = {v: k for k, v in cls._KEYS.items()}
        fields = {names.get(k, k): v for k, v in raw.items()}
        fields["interpolation"] = Interpolation.from_dict(raw["interpolation"])
        return cls(**fields)

    @classmethod
    def read_all(cls, path: Path) -> list[ServeCandidate]:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a JSON list of candidates")
        return [cls.from_dict(c) for c in data]
