"""What the stage builders share: the run's inputs, config and runner, and the typed results of earlier stages."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distill.core.errors import ConfigError
from distill.core.formats import Document, Qrels, Query, Run
from distill.core.stage_runner import StageResult, StageRunner
from distill.presets import PipelineConfig

if TYPE_CHECKING:
    from distill.core.interpolation import Interpolation
    from distill.pipeline.results import ServeCandidate, TeacherFit
    from distill.teacher.config import LabelConfig
    from distill.teacher.label import SourceFactory

__all__ = ["PipelineContext", "PipelineInputs", "ServedModel"]


@dataclass(frozen=True)
class PipelineInputs:
    corpus: Path
    eval_queries: Path
    eval_qrels: Path
    train_queries: Path | None = None
    train_qrels: Path | None = None
    eval_run: Path | None = None

    def __post_init__(self) -> None:
        if (self.train_queries is None) != (self.train_qrels is None):
            raise ConfigError("give both --train-queries and --train-qrels, or neither (then queries are synthesized)")
        for name in ("corpus", "eval_queries", "eval_qrels", "train_queries", "train_qrels", "eval_run"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value).expanduser().resolve())


@dataclass
class ServedModel:
    """The kept candidate: the directory ``distilrank serve`` takes, and the blend recorded in its card."""

    dir: Path
    interpolation: Interpolation
    candidates: list[ServeCandidate]

    @property
    def kept(self) -> ServeCandidate:
        return next(c for c in self.candidates if c.kept)


@dataclass
class PipelineContext:
    """Filled in stage order; a builder reads only what the stages before it have set."""

    inputs: PipelineInputs
    config: PipelineConfig
    out: Path
    runner: StageRunner
    corpus: dict[str, Document]
    eval_queries: dict[str, Query]
    eval_qrels: Qrels
    teacher_model: str
    student_model: str
    factory: SourceFactory
    label_base: LabelConfig
    # training data
    qrels_kind: str = "real"
    synth_info: dict[str, Any] | None = None
    train_queries: Path | None = None
    train_qrels: Path | None = None
    data_upstream: list[StageResult] = field(default_factory=list)
    n_training_parts: int = 0
    # first stage
    first_stage: Run = field(default_factory=dict)
    drop_ids: bool = False
    drop_reason: str = ""
    # teacher
    llm_dirs: dict[str, Path] = field(default_factory=dict)
    teacher_upstream: list[StageResult] = field(default_factory=list)
    label_cfg: LabelConfig | None = None
    teacher: TeacherFit | None = None
    # student and the served model
    variants: dict[str, Path] = field(default_factory=dict)
    served: ServedModel | None = None

    def result(self, name: str) -> StageResult:
        return self.runner.results[name]

    def has(self, name: str) -> bool:
        return name in self.runner.results

    @property
    def train_inputs(self) -> dict[str, Path]:
        assert self.train_queries is not None and self.train_qrels is not None
        return {"corpus": self.inputs.corpus, "train_queries": self.train_queries, "train_qrels": self.train_qrels}

    @property
    def train_run(self) -> Path:
        return self.result("first_stage_train").outputs["run"]
