"""Typed, validated configs of the teacher stages (CPT, SFT, labelling, query synthesis).

Every config is a frozen dataclass validated at construction (``ConfigError`` says which field and
how to fix it); ``to_dict()`` gives the resolved config written beside each stage's artifacts, and its
hash decides whether a finished stage is skipped on the next run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from distill.core.config import to_dict
from distill.core.errors import ConfigError

__all__ = ["CPTConfig", "LabelConfig", "LoRAConfig", "SFTConfig", "SynthConfig", "TrainConfig"]

Device = Literal["auto", "cpu", "cuda"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]

#: default ranking template; ``{eos}`` is not needed: the model's end-of-sequence token is appended
#: after truncation so the scored position is always the same token (RankLLaMA's ``</s>``).
DEFAULT_TEMPLATE = "query: {query} document: {title} {text}"


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def _one_of(name: str, value: str, allowed: tuple[str, ...]) -> None:
    _check(value in allowed, f"{name} must be one of {list(allowed)}, got {value!r}")


@dataclass(frozen=True)
class LoRAConfig:
    """LoRA adapters via peft (``pip install distilrank[lora]``); merged into the weights when saved."""

    enabled: bool = False
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")

    def __post_init__(self) -> None:
        object.__setattr__(self, "target_modules", tuple(self.target_modules))
        _check(self.r >= 1 and self.alpha >= 1,
               f"lora.r and lora.alpha must be >= 1, got r={self.r}, alpha={self.alpha}")
        _check(0.0 <= self.dropout < 1.0, f"lora.dropout must be in [0, 1), got {self.dropout}")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings shared by CPT and SFT.

    ``batch_size`` counts training examples per optimiser micro-step (for SFT one example is a query
    with 1 + ``num_negatives`` documents). ``max_steps`` > 0 caps the optimiser steps (after
    ``grad_accum``); otherwise ``epochs`` passes over the data are made. Checkpoints (model, optimiser,
    step, RNG) are written every ``checkpoint_every`` steps and the latest is resumed automatically.
    """

    base_model: str = "default"
    max_length: int = 192
    batch_size: int = 4
    grad_accum: int = 1
    lr: float = 2e-5
    weight_decay: float = 0.0
    warmup_ratio: float = 0.1
    epochs: int = 1
    max_steps: int = 0
    max_grad_norm: float = 1.0
    seed: int = 13
    checkpoint_every: int = 200
    device: Device = "auto"
    precision: Precision = "auto"
    gradient_checkpointing: bool = False
    lora: LoRAConfig = field(default_factory=LoRAConfig)

    def __post_init__(self) -> None:
        if isinstance(self.lora, dict):
            object.__setattr__(self, "lora", LoRAConfig(**self.lora))
        _check(self.max_length >= 16, f"max_length must be >= 16 tokens, got {self.max_length}")
        _check(self.batch_size >= 1 and self.grad_accum >= 1,
               f"batch_size and grad_accum must be >= 1, got {self.batch_size} and {self.grad_accum}")
        _check(self.lr > 0, f"lr must be > 0, got {self.lr}")
        _check(0.0 <= self.warmup_ratio < 1.0, f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        _check(self.epochs >= 1 or self.max_steps > 0, "set epochs >= 1 or max_steps > 0")
        _check(self.max_steps >= 0, f"max_steps must be >= 0 (0 = use epochs), got {self.max_steps}")
        _check(self.checkpoint_every >= 1, f"checkpoint_every must be >= 1, got {self.checkpoint_every}")
        _one_of("device", self.device, ("auto", "cpu", "cuda"))
        _one_of("precision", self.precision, ("auto", "fp32", "bf16", "fp16"))

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


@dataclass(frozen=True)
class CPTConfig(TrainConfig):
    """Continual pre-training: generate ``title + text`` of a relevant document from the query.

    Data: either ``pairs`` (JSONL with ``query``, ``title``, ``text`` per line: a click log's shape)
    or ``queries`` + ``qrels`` + ``corpus`` (every judged-relevant pair). Loss only on target tokens.
    ``max_pairs`` > 0 keeps a seeded random subset (CPU budgets).
    """

    pairs: str | None = None
    queries: str | None = None
    qrels: str | None = None
    corpus: str | None = None
    max_pairs: int = 0
    prompt_template: str = "Query: {query}\nRelevant document:\n"
    target_template: str = "{title}\n{text}"
    lr: float = 5e-5

    def __post_init__(self) -> None:
        super().__post_init__()
        _check("{query}" in self.prompt_template, "prompt_template must contain {query}")
        _check(self.max_pairs >= 0, f"max_pairs must be >= 0, got {self.max_pairs}")

    def require_data(self) -> CPTConfig:
        """The data fields are checked where the stage runs (a pipeline section leaves them to the pipeline)."""
        from_qrels = self.queries and self.qrels and self.corpus
        _check(bool(self.pairs) != bool(from_qrels),
               "CPT needs exactly one data source: --pairs JSONL, or --queries + --qrels + --corpus")
        return self


@dataclass(frozen=True)
class SFTConfig(TrainConfig):
    """Rank SFT: score head on the last non-pad token, listwise softmax CE over 1 positive + k negatives.

    Negatives are sampled per epoch from the top ``negative_depth`` first-stage candidates (``run`` if
    given, else BM25 over ``corpus``), never from the query's judged positives.

    Defaults and why:

    * ``num_negatives=3``: RankLLaMA uses 15; 1+3 keeps a CPU step affordable and still listwise.
    * ``temperature=1.0``: scores are raw logits, no rescaling before the softmax.
    * ``gen_weight=0.1`` (RankingGPT's generation regulariser on the positive pair): cheap, it reuses
      the positive's hidden states through the LM head, and it keeps the model close to what CPT taught;
      a small weight so the rank loss dominates.
    * ``kl_weight=0.0``: the KL-to-CPT term needs a frozen second copy of the model (2x memory, +50%
      compute per step), so it is off by default; set e.g. 0.1 on a GPU. The reference is
      ``kl_reference`` or, if unset, ``base_model`` (normally the CPT output).
    """

    queries: str = ""
    qrels: str = ""
    corpus: str = ""
    run: str | None = None
    num_negatives: int = 3
    negative_depth: int = 30
    max_queries: int = 0
    template: str = DEFAULT_TEMPLATE
    temperature: float = 1.0
    gen_weight: float = 0.1
    kl_weight: float = 0.0
    kl_reference: str | None = None
    lr: float = 2e-5
    head_lr: float = 1e-3

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.num_negatives >= 1, f"num_negatives must be >= 1, got {self.num_negatives}")
        _check(self.negative_depth >= self.num_negatives,
               f"negative_depth ({self.negative_depth}) must be >= num_negatives ({self.num_negatives})")
        _check(self.temperature > 0, f"temperature must be > 0, got {self.temperature}")
        _check(self.gen_weight >= 0 and self.kl_weight >= 0, "gen_weight and kl_weight must be >= 0")
        _check("{query}" in self.template and ("{text}" in self.template or "{title}" in self.template),
               "template must contain {query} and {text} (and optionally {title})")
        _check(self.max_queries >= 0, f"max_queries must be >= 0, got {self.max_queries}")

    def require_data(self) -> SFTConfig:
        """The data fields are checked where the stage runs (a pipeline section leaves them to the pipeline)."""
        _check(bool(self.queries and self.qrels and self.corpus), "SFT needs --queries, --qrels and --corpus")
        return self


LabelSource = Literal["llm", "run", "endpoint", "openai", "dense", "bm25", "ensemble"]
_LABEL_SOURCES = ("llm", "run", "endpoint", "openai", "dense", "bm25", "ensemble")


@dataclass(frozen=True)
class LabelConfig:
    """Score candidate lists of training queries with a teacher source (:mod:`distill.teacher.sources`).

    Candidates: BM25 top ``n_bm25``, dense bi-encoder top ``n_dense`` (``dense_model`` embeddings of
    the corpus, cached in ``<out>/cache``), ``n_random`` random corpus documents and the judged positives
    (when ``qrels`` is given); de-duplicated, sources joined with ``+``. With ``source="run"`` the
    candidates are the run's top ``run_depth`` instead (plus judged positives).

    ``source="ensemble"`` combines ``members`` (per-query z-scores, weighted sum). ``weights`` fixes the
    weights; otherwise they are fitted by coordinate ascent on nDCG@10 over up to ``fit_queries``
    labelled queries that have qrels (real ones; with synthetic ones only, ``synthetic_weights="equal"``
    gives equal weights to the members not far below the best instead), and a member whose weight is 0 is
    not run on the remaining queries. Without qrels the members get
    equal weights. ``shard="I/N"`` labels only the I-th of N disjoint slices of the queries (0-based),
    so N machines label in parallel and the files concatenate; every shard fits the same weights on
    the same fit queries.
    """

    source: LabelSource = "llm"
    #: llm: a teacher dir (``teacher sft``) for ``llm_score="head"``, any causal LM dir for ``"qlm"``
    teacher: str = ""
    llm_score: Literal["head", "qlm"] = "head"
    #: run: a TREC run of the teacher over (at least) the queries to label
    run: str | None = None
    run_depth: int = 100
    #: endpoint: a rerank server's URL (Cohere, Jina, vLLM, TEI, Infinity); openai: an OpenAI-compatible server's
    #: base URL (http://host:8000/v1) or its /chat/completions or /completions URL
    endpoint_url: str | None = None
    endpoint_model: str | None = None
    endpoint_api_key: str | None = None
    endpoint_batch_size: int = 32
    endpoint_timeout_s: float = 60.0
    endpoint_retries: int = 4
    #: endpoint: the request shape, ``auto`` detected (see distill.teacher._endpoint.EndpointFormat)
    endpoint_format: Literal["auto", "cohere", "tei", "vllm-score"] = "auto"
    endpoint_concurrency: int = 4
    #: the longest wait between two tries, whatever the backoff or a Retry-After header asks for
    endpoint_max_wait_s: float = 120.0
    #: openai: ``yes`` (log-odds of P(yes), chat or completions) or ``qlm`` (query likelihood, completions + echo)
    openai_score: Literal["yes", "qlm"] = "yes"
    #: ensemble
    members: tuple[str, ...] = ("llm", "dense", "bm25")
    weights: dict[str, float] | None = None
    fit_queries: int = 100
    qrels_kind: Literal["real", "synthetic"] = "real"
    #: with synthetic qrels only: ``equal`` weights over the members that are not far below the best
    #: (:func:`distill.teacher.label.synthetic_qrels_weights`), or ``fit`` them as with real qrels
    synthetic_weights: Literal["equal", "fit"] = "equal"
    queries: str = ""
    corpus: str = ""
    qrels: str | None = None
    n_bm25: int = 30
    n_dense: int = 20
    n_random: int = 10
    dense_model: str = "default"
    max_queries: int = 0
    shard: str | None = None
    batch_size: int = 8
    max_length: int = 192
    seed: int = 13
    device: Device = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "members", tuple(self.members))
        _one_of("source", self.source, _LABEL_SOURCES)
        _one_of("llm_score", self.llm_score, ("head", "qlm"))
        _one_of("qrels_kind", self.qrels_kind, ("real", "synthetic"))
        _one_of("synthetic_weights", self.synthetic_weights, ("equal", "fit"))
        used = self.used_sources
        for m in self.members:
            _one_of("ensemble member", m, tuple(x for x in _LABEL_SOURCES if x != "ensemble"))
        _check(self.source != "ensemble" or len(self.members) >= 1, "an ensemble needs at least one member")
        _check("run" not in used or bool(self.run), "the run source needs --run (a TREC run file of the teacher)")
        _check("endpoint" not in used or bool(self.endpoint_url), "the endpoint source needs --endpoint-url")
        _check("openai" not in used or bool(self.endpoint_url),
               "the openai source needs --endpoint-url (the server's base URL, e.g. http://127.0.0.1:8000/v1)")
        _one_of("openai_score", self.openai_score, ("yes", "qlm"))
        _one_of("endpoint_format", self.endpoint_format, ("auto", "cohere", "tei", "vllm-score"))
        if self.endpoint_url and used & {"endpoint", "openai"}:
            from distill.teacher._endpoint import check_url

            check_url(self.endpoint_url, "--endpoint-url")  # a URL with no host is exit 2 now, not after retries
        _check(min(self.n_bm25, self.n_dense, self.n_random) >= 0, "n_bm25, n_dense and n_random must be >= 0")
        _check(self.source == "run" or self.n_bm25 + self.n_dense + self.n_random > 0 or self.qrels is not None,
               "no candidate source: set n_bm25, n_dense or n_random > 0")
        _check(self.run_depth >= 2 and self.fit_queries >= 1, "run_depth must be >= 2 and fit_queries >= 1")
        _check(self.batch_size >= 1 and self.max_length >= 16, "batch_size must be >= 1 and max_length >= 16")
        _check(self.max_queries >= 0, f"max_queries must be >= 0, got {self.max_queries}")
        if self.weights is not None:
            _check(isinstance(self.weights, dict) and set(self.weights) <= set(self.members),
                   f"weights must map ensemble members {list(self.members)} to numbers, got {self.weights!r}")
        self.shard_index()
        _one_of("device", self.device, ("auto", "cpu", "cuda"))

    def require_data(self) -> LabelConfig:
        """The data and teacher fields are checked where the stage runs (the pipeline fills them itself)."""
        _check("llm" not in self.used_sources or bool(self.teacher),
               "the llm source needs --teacher (a `distilrank teacher sft` dir, "
               "or any causal LM dir with llm_score=qlm)")
        _check(bool(self.queries and self.corpus), "label needs --queries and --corpus")
        return self

    @property
    def used_sources(self) -> frozenset[str]:
        """The sources this labelling runs: the ensemble's members, or the one source."""
        return frozenset(self.members) if self.source == "ensemble" else frozenset({self.source})

    def shard_index(self) -> tuple[int, int]:
        """(I, N) of ``shard="I/N"``; (0, 1) without sharding."""
        if self.shard is None:
            return 0, 1
        i, _, n = str(self.shard).partition("/")
        _check(i.isdigit() and n.isdigit() and 0 <= int(i) < int(n),
               f"shard must be 'I/N' with 0 <= I < N (e.g. 0/4), got {self.shard!r}")
        return int(i), int(n)

    def to_dict(self) -> dict[str, Any]:
        out = to_dict(self)
        out["endpoint_api_key"] = "***" if self.endpoint_api_key else None  # never written to disk
        return out


@dataclass(frozen=True)
class SynthConfig:
    """Synthetic training queries (see :mod:`distill.teacher.synthesize`): few-shot generation from
    ``crop_sentences`` consecutive sentences of ``num_docs`` documents, filters (meta-text, copies,
    length ``min_words``..``max_words``, duplicates), a round-trip check (the source document in the top
    ``roundtrip_k`` of BM25 or dense; 0 = off) and a cropped-span fallback for rejected documents.
    """

    corpus: str = ""
    generator: str = "default"
    num_docs: int = 100
    crop_sentences: int = 3
    max_passage_chars: int = 600
    max_new_tokens: int = 24
    batch_size: int = 8
    min_words: int = 3
    max_words: int = 20
    roundtrip_k: int = 10
    crop_fallback: bool = True
    qid_prefix: str = "syn"
    seed: int = 13
    device: Device = "auto"

    def __post_init__(self) -> None:
        _check(self.num_docs >= 1 and self.crop_sentences >= 1, "num_docs and crop_sentences must be >= 1")
        _check(1 <= self.min_words <= self.max_words,
               f"need 1 <= min_words <= max_words, got {self.min_words}, {self.max_words}")
        _check(self.max_new_tokens >= 4 and self.batch_size >= 1, "max_new_tokens must be >= 4 and batch_size >= 1")
        _check(self.roundtrip_k >= 0, f"roundtrip_k must be >= 0 (0 = no round-trip filter), got {self.roundtrip_k}")
        _one_of("device", self.device, ("auto", "cpu", "cuda"))

    def require_data(self) -> SynthConfig:
        """The corpus is checked where the stage runs (the pipeline fills it itself)."""
        _check(bool(self.corpus), "synthesize needs --corpus")
        return self

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)
