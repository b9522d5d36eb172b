"""The pipeline's typed config (:class:`PipelineConfig`) and its size presets.

A pipeline config is a JSON or TOML object with one section per stage; every section is optional
and overrides the preset it starts from::

    {"preset": "demo", "teacher_model": "default", "student_model": "default",
     "synthesize": "auto", "allow_regression": false,
     "synth": {...SynthConfig}, "cpt": {...CPTConfig training fields}, "sft": {...SFTConfig},
     "label": {...LabelConfig: source, members, weights, run, endpoint_url, candidates...},
     "student": {...StudentTrainConfig}, "eval": {...EvalConfig}}

Every key of every section is validated when the config is built (an unknown key anywhere is exit 2
with its dotted name); the fields the pipeline fills itself (data paths, the teacher directory) are
refused in the sections.

Presets (wall times measured on the 2-core development machine, see README):

* ``tiny``: random 2-layer models built from configs with the real tokenizers; ~2 minutes; used by CI.
* ``demo``: the real base models (SmolLM2-135M teacher, all-MiniLM-L6-v2 student) on the bundled
  scifact_mini, within 15 minutes on 2 CPU cores. The teacher is the ensemble of the (briefly) trained
  LLM, the dense bi-encoder and BM25, weights fitted on training queries.
* ``small``: the same recipe on a full collection at a CPU-feasible size (SciFact: README).
* ``full``: GPU scale: the LLM teacher alone (longer sequences, many steps, 15 negatives as in RankLLaMA).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from distill.core.config import from_mapping, to_dict
from distill.core.errors import ConfigError
from distill.student.train import StudentTrainConfig
from distill.teacher.config import CPTConfig, LabelConfig, SFTConfig, SynthConfig
from distill.teacher.dense_ft import DenseFineTuneConfig
from export.config import ExportConfig

__all__ = ["PRESETS", "CompressConfig", "EvalConfig", "FirstStageConfig", "PipelineConfig", "ServeConfig",
           "resolve_config"]

_TEACHER_CPU = {"max_length": 96, "batch_size": 2, "grad_accum": 1, "checkpoint_every": 50, "precision": "fp32"}
_CPU_ENSEMBLE = {"source": "ensemble", "members": ["llm", "dense", "bm25"]}

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "teacher_model": "tiny", "student_model": "tiny",
        "synth": {"num_docs": 16, "max_new_tokens": 8},
        "cpt": {"max_length": 64, "batch_size": 4, "max_steps": 2, "max_pairs": 16},
        "sft": {"max_length": 64, "batch_size": 2, "max_steps": 2, "max_queries": 8, "num_negatives": 2},
        "label": {**_CPU_ENSEMBLE, "max_length": 64, "max_queries": 12, "n_bm25": 5, "n_dense": 2, "n_random": 1,
                  "batch_size": 16, "fit_queries": 12},
        "student": {"model": {"max_seq_len": 64}, "max_steps": 4, "batch_size": 4, "eval_steps": 2,
                    "dev_fraction": 0.3, "dev_min_queries": 2, "dev_top_k": 10, "pairs": {"n_negatives": 2},
                    "warmup": {"mode": "off"}},
        "eval": {"top_k": 10, "teacher_top_k": 10, "max_queries": 10, "teacher_batch_size": 16},
        "serve": {"export": {"quantize": "none", "latency_reps": 2, "gate_queries": 8}},
    },
    "demo": {
        "teacher_model": "default", "student_model": "default",
        "synth": {"num_docs": 60},
        "cpt": {**_TEACHER_CPU, "max_steps": 4, "max_pairs": 16},
        "sft": {**_TEACHER_CPU, "max_steps": 6, "max_queries": 24, "num_negatives": 3},
        "label": {**_CPU_ENSEMBLE, "max_length": 96, "n_bm25": 20, "n_dense": 10, "n_random": 2, "batch_size": 16,
                  "fit_queries": 30},
        # 15-minute budget: 128 tokens, a fast-learning fresh head (1e-3) so 200 steps get past the random start, and
        # no warm-up on the corpus (its 200 steps would take as long as the distillation)
        "student": {"model": {"max_seq_len": 128, "max_query_tokens": 32}, "max_steps": 200, "eval_steps": 50,
                    "head_learning_rate": 1e-3, "dev_fraction": 0.25, "dev_top_k": 20,
                    "pairs": {"n_negatives": 7}, "warmup": {"mode": "off"}},
        "eval": {"top_k": 20, "teacher_top_k": 20, "max_queries": 0, "teacher_batch_size": 16},
        "serve": {"export": {"quantize": "auto", "int8_mode": "dynamic"}},
    },
    "small": {
        "teacher_model": "default", "student_model": "default",
        "synth": {"num_docs": 800},
        "cpt": {**_TEACHER_CPU, "max_length": 128, "max_steps": 40, "max_pairs": 160},
        "sft": {**_TEACHER_CPU, "max_length": 128, "max_steps": 50, "max_queries": 200, "num_negatives": 3},
        "label": {**_CPU_ENSEMBLE, "max_length": 128, "n_bm25": 30, "n_dense": 20, "n_random": 10, "batch_size": 16,
                  "fit_queries": 50},
        # the published small-preset figures were measured without the corpus warm-up; "warmup": {"mode": "on"}
        # in the config's student section adds it (about 23 minutes on 2 AVX-512 cores)
        "student": {"model": {"max_seq_len": 192, "max_query_tokens": 32}, "max_steps": 400, "eval_steps": 100,
                    "dev_max_queries": 80, "dev_top_k": 20, "pairs": {"n_negatives": 7}, "warmup": {"mode": "off"}},
        "eval": {"top_k": 20, "teacher_top_k": 20, "max_queries": 0, "teacher_batch_size": 16},
        # the route that met ">= 3x the L6 fp32 pairs/s within 1 nDCG@10 point": a cut, distilled again, int8;
        # runtime auto also gates OpenVINO's recipes (bf16 where the CPU has AMX or AVX512-BF16) and keeps the fastest.
        # L4 as well as L3: where the L3 loses more than the tolerance on dev, an L4 in int8 can still reach 3x
        "compress": {"layers": [3, 4], "max_steps": 800},
        "serve": {"export": {"quantize": "auto", "int8_mode": "dynamic", "runtime": "auto"}},
    },
    "full": {
        "teacher_model": "default", "student_model": "default",
        "synth": {"num_docs": 5000},
        "cpt": {"max_length": 512, "batch_size": 8, "epochs": 1, "checkpoint_every": 500,
                "gradient_checkpointing": True},
        "sft": {"max_length": 512, "batch_size": 4, "epochs": 2, "num_negatives": 15, "negative_depth": 100,
                "gradient_checkpointing": True, "kl_weight": 0.1},
        "label": {"source": "llm", "max_length": 512, "n_bm25": 50, "n_dense": 30, "n_random": 10, "batch_size": 32},
        "student": {"model": {"max_seq_len": 256, "max_query_tokens": 48}, "epochs": 2, "batch_size": 32,
                    "eval_steps": 500, "dev_max_queries": 500, "dev_top_k": 100},
        "eval": {"top_k": 100, "teacher_top_k": 100, "max_queries": 0, "teacher_batch_size": 32},
        "compress": {"layers": [3], "max_steps": 2000},
        "serve": {"export": {"quantize": "auto", "int8_mode": "dynamic", "runtime": "auto"}},
    },
}


@dataclass(frozen=True)
class EvalConfig:
    """Every system reranks the first stage's top ``top_k`` of each eval query (the teacher its top
    ``teacher_top_k``); ``max_queries`` > 0 keeps the first N judged eval queries (0 = all)."""

    top_k: int = 20
    teacher_top_k: int = 20
    max_queries: int = 0
    teacher_batch_size: int = 16
    #: BEIR's rule: drop hits whose doc id is the query id; None = auto (distill.core.evaluation.resolve_identical_ids)
    ignore_identical_ids: bool | None = None

    def __post_init__(self) -> None:
        if min(self.top_k, self.teacher_top_k, self.teacher_batch_size) < 1 or self.max_queries < 0:
            raise ConfigError("eval: top_k, teacher_top_k and teacher_batch_size must be >= 1 and max_queries >= 0")


@dataclass(frozen=True)
class FirstStageConfig:
    """Where the candidates come from, for training (the teacher labels them) and for evaluation.

    ``bm25``: in-process bm25s (k1 0.9, b 0.4, Snowball stemming). ``opensearch``: the index that will
    serve (``url``, ``index``), so the student learns on and is measured on the candidates the engine returns.
    """

    kind: Literal["bm25", "opensearch"] = "bm25"
    url: str | None = None
    index: str | None = None
    #: first-stage depth of the eval queries and of the training queries
    top_k: int = 100
    train_top_k: int = 50

    def __post_init__(self) -> None:
        if self.kind not in ("bm25", "opensearch"):
            raise ConfigError(f"first_stage.kind must be bm25 or opensearch, got {self.kind!r}")
        if self.kind == "opensearch" and not (self.url and self.index):
            raise ConfigError("first_stage.kind = opensearch needs url and index (--opensearch-url, --index)")
        if min(self.top_k, self.train_top_k) < 1:
            raise ConfigError("first_stage.top_k and train_top_k must be >= 1")


@dataclass(frozen=True)
class CompressConfig:
    """Shallower variants of the student: each is the student cut to ``layers`` encoder layers (evenly spread,
    first and last kept), then distilled again on the same labels for ``max_steps`` (step chosen on dev)."""

    layers: tuple[int, ...] = ()
    max_steps: int = 800

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))
        if any(not isinstance(n, int) or n < 1 for n in self.layers):
            raise ConfigError(f"compress.layers must be positive integers, got {list(self.layers)}")
        if self.max_steps < 1:
            raise ConfigError(f"compress.max_steps must be >= 1, got {self.max_steps}")


@dataclass(frozen=True)
class ServeConfig:
    """The served model: every variant is exported and gated with ``export``; the pipeline keeps the fastest
    whose interpolated dev nDCG@10 is within ``max_drop_points`` of the best candidate's."""

    export: ExportConfig = field(default_factory=ExportConfig)
    max_drop_points: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_drop_points <= 100.0:
            raise ConfigError(f"serve.max_drop_points must be in [0, 100], got {self.max_drop_points}")


#: fields of each stage config the pipeline fills itself (paths between stages, the chosen models); a section
#: must leave them at their defaults
_OWNED = {
    "synth": ("corpus", "generator"),
    "cpt": ("base_model", "queries", "qrels", "corpus", "pairs"),
    "sft": ("base_model", "queries", "qrels", "corpus", "run"),
    "label": ("teacher", "queries", "corpus", "qrels", "qrels_kind", "dense_model"),
}


@dataclass(frozen=True)
class PipelineConfig:
    """One run's config: every stage's section is that stage's own typed config, validated when built; the
    fields the pipeline fills itself (data paths, the previous stages' outputs) stay at their defaults here and
    are set with :func:`dataclasses.replace` where the stage runs."""

    preset: str = "demo"
    teacher_model: str = "default"
    student_model: str = "default"
    #: synthesise training queries: ``auto`` only when none are given, ``always`` also beside given ones, ``never``
    synthesize: Literal["auto", "always", "never"] = "auto"
    #: finish with exit 0 even when the interpolated student does not beat the first stage on dev
    allow_regression: bool = False
    synth: SynthConfig = field(default_factory=SynthConfig)
    cpt: CPTConfig = field(default_factory=CPTConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    #: fine-tune the dense bi-encoder on the training qrels before labelling (a stronger dense teacher member)
    dense_ft: DenseFineTuneConfig = field(default_factory=DenseFineTuneConfig)
    label: LabelConfig = field(default_factory=LabelConfig)
    student: StudentTrainConfig = field(default_factory=StudentTrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    first_stage: FirstStageConfig = field(default_factory=FirstStageConfig)
    compress: CompressConfig = field(default_factory=CompressConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)

    def __post_init__(self) -> None:
        if self.synthesize not in ("auto", "always", "never"):
            raise ConfigError(f"synthesize must be auto, always or never, got {self.synthesize!r}")
        if not isinstance(self.allow_regression, bool):
            raise ConfigError(f"allow_regression must be true or false, got {self.allow_regression!r}")
        for name, owned in _OWNED.items():
            section, default = getattr(self, name), type(getattr(self, name))()
            if not isinstance(section, type(default)):
                raise ConfigError(f"{name}: expected a {type(default).__name__}, got {type(section).__name__}")
            set_here = sorted(f for f in owned if getattr(section, f) != getattr(default, f))
            if set_here:
                raise ConfigError(f"{name}: {set_here} are set by the pipeline itself (from the data flags and the "
                                  "previous stages); remove them from the config")
        if not isinstance(self.student, StudentTrainConfig):
            raise ConfigError(f"student: expected a StudentTrainConfig, got {type(self.student).__name__}")

    def student_config(self, base: str | None = None) -> StudentTrainConfig:
        """The student's config, with ``base`` (the student base model) set when given."""
        if base is None:
            return self.student
        return replace(self.student, model=replace(self.student.model, base=base))

    def uses_llm(self) -> bool:
        label = self.label
        if label.source == "llm":
            return True
        if label.source != "ensemble" or "llm" not in label.members:
            return False
        return label.weights is None or float(label.weights.get("llm", 0.0)) > 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, each section through its own ``to_dict`` (which keeps secrets such as API keys out)."""
        import dataclasses

        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if hasattr(value, "to_dict"):
                value = value.to_dict()
            elif dataclasses.is_dataclass(value):
                value = to_dict(value)
            out[f.name] = copy.deepcopy(value)
        return out


_SECTIONS = {f for f in PipelineConfig.__dataclass_fields__}


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), dict) else value
    return out


def resolve_config(preset: str | None, overrides: Mapping[str, Any] | None = None) -> PipelineConfig:
    """Preset (``--preset``, else the file's ``preset``, else ``demo``) merged with a config file's sections."""
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - _SECTIONS)
    if unknown:
        raise ConfigError(f"unknown config section(s) {unknown}; allowed: {sorted(_SECTIONS)}")
    name = preset or overrides.pop("preset", None) or "demo"
    overrides.pop("preset", None)
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return from_mapping(PipelineConfig, {"preset": name, **_merge(PRESETS[name], overrides)}, "config")
