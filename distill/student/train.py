"""Student training: distil teacher labels into the cross-encoder with the hybrid (or listwise) loss.

Why the HF ``Trainer`` and not sentence-transformers' ``CrossEncoderTrainer``: our training unit is
a *group* ``[d+, d-_1..d-_n]`` carrying one teacher score per document, and the loss needs the
``(batch, group)`` score matrix. With HF Trainer that is one ``compute_loss`` override plus a
collator; CrossEncoderTrainer would route the same thing through its column-per-text dataset
convention and a loss module wrapper for no gain. HF Trainer gives us what the issue asks for
directly: checkpoints and ``resume_from_checkpoint``, best-checkpoint tracking on a dev metric,
fp16/bf16 on GPU, and accelerate multi-GPU. The saved artifact is a plain
``BertForSequenceClassification`` either way, which CrossEncoder loads (see :mod:`.model`).

Dev evaluation (:mod:`.dev_signal`): every ``eval_steps`` the current model reranks the dev queries' candidates
(through the shared :mod:`distill.core.cross_encoder` scorer, the same truncation as serving) and nDCG@10 is
computed per query with :func:`distill.core.evaluation.evaluate`. Dev queries are a deterministic slice (by qid
hash) of the labelled queries, sized by :func:`~distill.student.dev_signal.dev_split_size`. With qrels the dev
signal is the qrels; without any (labels from a teacher alone) it is the teacher's own ranking of the held-out
queries (its top ``pseudo_qrels_top`` candidates count as relevant), and the result says so (``dev_signal``).
Candidates are the first-stage run's top ``dev_top_k`` when given, else every labelled candidate. The checkpoint
kept is chosen by ``checkpoint_rule`` (:func:`~distill.student.dev_signal.choose_checkpoint`), and the chosen
model's distance from a random order of the same candidates is recorded (``dev_check``).

Before distillation a warm-up on the corpus itself (:mod:`.warmup`, ``warmup.mode``, on by default) gives the
student a relevance prior from weak pairs.

Interpolation with the first stage is tuned on the dev split only when the dev qrels are real
judgments (``qrels_kind="real"``); with synthetic or teacher-derived dev labels a documented
conservative weight is written instead (:data:`CONSERVATIVE_ALPHA`). Given a dev run, ``OUT/student_report.json``
and ``.md`` compare the student and the interpolated student with the first stage on dev
(:func:`~distill.student.guard.dev_verdict`); ``TrainResult.regression`` says whether neither beats it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distill.core import distributed
from distill.core.atomic_io import atomic_dir, atomic_write, config_hash, write_json
from distill.core.config import from_mapping, to_dict
from distill.core.errors import ConfigError, DataError
from distill.core.formats import Document, Qrels, Query, Run
from distill.core.label_files import LabeledQuery
from distill.core.manifest import write_manifest
from distill.student.dev_signal import (
    CheckpointRule,
    DevSplit,
    dev_first_stage,
    dev_split_size,
    pseudo_qrels,
)
from distill.student.interpolate import InterpolationConfig, InterpolationResult
from distill.student.loss_weights import LossWeights
from distill.student.model import StudentModelConfig
from distill.student.normalize import NormalizationConfig
from distill.student.pairs import PairConfig, PairGroup
from distill.student.warmup import WarmupConfig, WarmupOutcome

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["CONSERVATIVE_ALPHA", "REPORT_FILE", "StudentTrainConfig", "TrainResult", "build_dev_split", "choose_dev",
           "last_good_checkpoint", "train_student"]

#: first-stage weight used when no real judgments exist to tune it: z-scored first stage and z-scored
#: student, the first stage keeping the larger say (a reranker tuned on nothing must not take over).
CONSERVATIVE_ALPHA = 0.6
#: ``OUT/student_report.json`` (+ ``.md``): dev comparison, verdict, checkpoint choice, warm-up
REPORT_FILE = "student_report.json"
_HISTORY_FILE = "dev_history.json"

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudentTrainConfig:
    model: StudentModelConfig = field(default_factory=StudentModelConfig)
    pairs: PairConfig = field(default_factory=PairConfig)
    normalization: NormalizationConfig = field(default_factory=NormalizationConfig)
    loss: LossWeights = field(default_factory=LossWeights)
    interpolation: InterpolationConfig = field(default_factory=InterpolationConfig)
    #: the warm-up on the corpus itself before distillation (distill.student.warmup); on by default
    warmup: WarmupConfig = field(default_factory=WarmupConfig)
    #: 8e-5: the fresh 1-logit head and the encoder move together; 3e-5 left the loss flat for an epoch
    learning_rate: float = 8e-5
    #: learning rate of the fresh classification head (None = learning_rate)
    head_learning_rate: float | None = None
    #: groups per optimiser step (each group is 1 + n_negatives pairs)
    batch_size: int = 4
    #: total optimiser steps; None = ``epochs`` passes over the groups, but at least ``min_steps``
    max_steps: int | None = None
    epochs: float = 1.0
    #: a floor for the epoch-based count: a 45-query label file is 45 steps an epoch, far too few for a
    #: fresh head. 600 steps were measured on the retention bench (560 SciFact queries, teacher labels only):
    #: retention 0.885 vs 0.884 at 420, for 43% more time, so the floor stays at 400
    min_steps: int = 400
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    eval_steps: int = 50
    #: share of labelled queries held out as the dev split: round(n * dev_fraction), at most dev_max_queries, at
    #: least dev_min_queries but never more than half (distill.student.dev_signal.dev_split_size)
    dev_fraction: float = 0.15
    dev_min_queries: int = 5
    dev_max_queries: int = 100
    #: without qrels: the teacher's top-N candidates of a dev query are its pseudo-relevant docs
    pseudo_qrels_top: int = 3
    #: first-stage candidates reranked per dev query when a dev run is given (without one: every labelled one)
    dev_top_k: int = 20
    #: which evaluated checkpoint is kept: "best" mean, "last_unless_beaten" by checkpoint_margin_se standard
    #: errors, or "auto" (best with qrels, last_unless_beaten with the teacher's ranking as the dev signal)
    checkpoint_rule: CheckpointRule = "auto"
    #: 2 standard errors, as the ensemble asks of a slow member: with 8 evaluations of equally good checkpoints
    #: (10 dev queries, simulated) an earlier one clears 1 SE 47% of the time, 2 SE 15%
    checkpoint_margin_se: float = 2.0
    eval_batch_size: int = 32
    save_total_limit: int = 2
    seed: int = 13
    #: "auto" = bf16 on a GPU that supports it, else fp16 on GPU, else fp32
    precision: str = "auto"

    def __post_init__(self) -> None:
        if not self.learning_rate > 0:
            raise ConfigError(f"student learning_rate must be > 0, got {self.learning_rate}")
        if self.batch_size < 1 or self.eval_steps < 1 or self.dev_top_k < 1 or self.eval_batch_size < 1:
            raise ConfigError("student batch_size, eval_steps, dev_top_k and eval_batch_size must be >= 1")
        if self.head_learning_rate is not None and not self.head_learning_rate > 0:
            raise ConfigError(f"student head_learning_rate must be > 0 or null, got {self.head_learning_rate}")
        if self.dev_min_queries < 1 or self.dev_max_queries < self.dev_min_queries or self.pseudo_qrels_top < 1:
            raise ConfigError("student needs 1 <= dev_min_queries <= dev_max_queries and pseudo_qrels_top >= 1")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"student max_steps must be >= 1 or null, got {self.max_steps}")
        if not 0 < self.dev_fraction < 1:
            raise ConfigError(f"student dev_fraction must be in (0, 1), got {self.dev_fraction}")
        if self.precision not in ("auto", "fp32", "fp16", "bf16"):
            raise ConfigError(f"student precision must be auto, fp32, fp16 or bf16, got {self.precision!r}")
        if self.checkpoint_rule not in ("auto", "best", "last_unless_beaten"):
            raise ConfigError(f"student checkpoint_rule must be auto, best or last_unless_beaten, "
                              f"got {self.checkpoint_rule!r}")
        if not self.checkpoint_margin_se >= 0:
            raise ConfigError(f"student checkpoint_margin_se must be >= 0, got {self.checkpoint_margin_se}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> StudentTrainConfig:
        return from_mapping(cls, data, "student")

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


@dataclass
class TrainResult:
    model_dir: Path
    dev_metrics: dict[str, float]
    interpolation_path: Path | None
    steps: int
    wall_time_s: float
    #: "qrels" or "teacher ranking (top N)": what the dev metric and checkpoint choice were measured against
    dev_signal: str = "qrels"
    #: the chosen model's dev nDCG@10 against a random order of the same candidates (DevCheck.to_dict())
    dev_check: dict[str, float | None] = field(default_factory=dict)
    #: {"step", "rule", "reason"} of the kept checkpoint
    checkpoint: dict[str, Any] = field(default_factory=dict)
    #: whether the warm-up ran and why (WarmupOutcome.to_dict())
    warmup: dict[str, Any] = field(default_factory=dict)
    #: with a dev run: True when neither the student nor the interpolated student beats the first stage on dev
    regression: bool | None = None
    verdict: str | None = None
    report_path: Path | None = None


def _qid_hash(qid: str) -> int:
    return int(hashlib.sha1(qid.encode()).hexdigest()[:8], 16)


def choose_dev(labels: list[Any], qrels: Qrels, config: StudentTrainConfig,
               eligible: set[str] | None = None) -> tuple[set[str], Qrels, str]:
    """(dev qids, their relevance, what the relevance is): qrels when the labelled queries have them,
    else the teacher's own top candidates. The split is a deterministic slice by qid hash, drawn from
    ``eligible`` queries when given (e.g. only the real ones when synthetic queries are mixed in)."""
    if eligible is not None:
        labels = [lq for lq in labels if lq.qid in eligible] or labels
    judged = [lq for lq in labels if any(r >= 1 for r in qrels.get(lq.qid, {}).values())]
    pool = judged or list(labels)
    n = dev_split_size(len(pool), config.dev_fraction, config.dev_min_queries, config.dev_max_queries)
    dev = sorted(pool, key=lambda lq: (_qid_hash(lq.qid), lq.qid))[:n]
    if judged:
        return {lq.qid for lq in dev}, {lq.qid: qrels[lq.qid] for lq in dev}, "qrels"
    top = config.pseudo_qrels_top
    logger.warning("no labelled query has qrels: the dev split (%d queries) is judged against the teacher's own "
                   "top %d candidates, so the student is chosen for agreeing with the teacher", len(dev), top)
    return {lq.qid for lq in dev}, pseudo_qrels(dev, top), f"teacher ranking (top {top})"


def build_dev_split(labels: list[LabeledQuery], qrels: Qrels, config: StudentTrainConfig,
                    eligible: set[str] | None = None, dev_run_path: str | Path | None = None) -> DevSplit:
    """The dev queries, their relevance and the candidates the student reranks on them."""
    from distill.core.formats import read_run

    dev_ids, dev_qrels, signal = choose_dev(labels, qrels, config, eligible)
    dev_run = read_run(dev_run_path) if dev_run_path else None
    first_stage, top_k = dev_first_stage(labels, dev_ids, dev_run, config.dev_top_k)
    if dev_run is not None and not first_stage:
        raise DataError("the dev run has none of the dev queries; pass a first-stage run of the training queries",
                        path=dev_run_path)
    text = {lq.qid: lq.query for lq in labels}
    return DevSplit(frozenset(dev_ids), dev_qrels, signal, {q: Query(q, text[q]) for q in dev_ids}, first_stage,
                    top_k, dev_run is not None)


def last_good_checkpoint(ckpt_dir: Path) -> str | None:
    """The newest Trainer checkpoint that was written completely; torn ones (a kill mid-write) are removed.

    HF Trainer writes ``trainer_state.json`` after the weights, optimiser, scheduler and RNG state, so a
    checkpoint whose state file parses, whose weights open and whose optimiser/scheduler files exist is
    complete.
    """
    import shutil

    if not ckpt_dir.is_dir():
        return None
    found = sorted((p for p in ckpt_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
                   key=lambda p: int(p.name.split("-")[-1]), reverse=True)
    for path in found:
        try:
            json.loads((path / "trainer_state.json").read_text())
            from safetensors import safe_open

            with safe_open(str(path / "model.safetensors"), "pt") as fh:
                list(fh.keys())
            for name in ("optimizer.pt", "scheduler.pt"):
                if not (path / name).is_file():
                    raise FileNotFoundError(name)
            return str(path)
        except Exception as exc:  # any unreadable part means the checkpoint is torn
            logger.warning("student: checkpoint %s is incomplete (%s: %s); removing it and resuming from an earlier "
                           "one", path, type(exc).__name__, exc)
            shutil.rmtree(path, ignore_errors=True)
    return None


def _precision(cfg: StudentTrainConfig) -> dict[str, bool]:
    import torch

    if not torch.cuda.is_available() or cfg.precision == "fp32":
        return {}
    if cfg.precision == "bf16" or (cfg.precision == "auto" and torch.cuda.is_bf16_supported()):
        return {"bf16": True}
    return {"fp16": True}


def _read_inputs(labels_path: str | Path, corpus_path: str | Path,
                 qrels_path: str | Path | None) -> tuple[list[LabeledQuery], dict[str, Document], Qrels]:
    from distill.core.formats import read_corpus, read_qrels
    from distill.core.label_files import read_labels

    labels = read_labels(labels_path)
    if not labels:
        raise DataError("label file is empty; run `distilrank teacher label` first", path=labels_path)
    corpus = read_corpus(corpus_path)
    qrels: Qrels = read_qrels(qrels_path) if qrels_path else {}
    missing = sorted({d.doc_id for lq in labels for d in lq.docs if d.doc_id not in corpus})
    if missing:
        raise DataError(f"{len(missing)} labelled doc ids are not in the corpus (e.g. {missing[:3]}); "
                        f"label and train with the same corpus", path=labels_path)
    return labels, corpus, qrels


Reranker = Callable[[Mapping[str, Query], Run, int], Run]


def _reranker(model: Any, tokenizer: Any, config: StudentTrainConfig, corpus: Mapping[str, Document]) -> Reranker:
    from distill.student.model import student_scorer

    scorer = student_scorer(model, tokenizer, config.model.caps, config.eval_batch_size)
    return lambda queries, run, top_k: scorer.rerank(corpus, queries, run, top_k)


def train_student(config: StudentTrainConfig, labels_path: str | Path, corpus_path: str | Path,
                  qrels_path: str | Path | None, out_dir: str | Path, dev_run_path: str | Path | None = None,
                  resume: bool = True, qrels_kind: str = "real", dev_eligible: set[str] | None = None) -> TrainResult:
    """Warm up (if configured), train, keep the chosen dev checkpoint, set the interpolation; the student lands in
    ``out_dir/model``.

    ``out_dir/checkpoints`` holds Trainer checkpoints; an interrupted run resumes from the last complete
    one (when ``resume`` and the config hash matches). ``out_dir/model/interpolation.json`` carries the
    first-stage weight and normalisations: tuned on the dev split when ``qrels_kind == "real"``, else
    :data:`CONSERVATIVE_ALPHA`.
    """
    from transformers import set_seed

    from distill.student.model import base_ranks, build_student
    from distill.student.pairs import build_groups
    from distill.student.warmup import run_warmup

    distributed.init()
    start = time.perf_counter()
    out_dir = Path(out_dir)
    labels, corpus, qrels = _read_inputs(labels_path, corpus_path, qrels_path)
    split = build_dev_split(labels, qrels, config, dev_eligible, dev_run_path)
    train_labels = [lq for lq in labels if lq.qid not in split.qids]
    groups = build_groups(train_labels, qrels, config.pairs, config.normalization)
    logger.info("student: %d training groups of %d docs from %d queries; %d dev queries, %s candidates each "
                "(dev signal: %s)", len(groups), 1 + config.pairs.n_negatives, len(train_labels), len(split.qids),
                f"top {split.top_k} first-stage" if split.from_run else "all labelled", split.signal)
    set_seed(config.seed)  # before the head is created: a resumed run must build the same initial model
    model, tokenizer = build_student(config.model)
    # under torchrun every process loads the warmed weights a single-process run kept; none trains them
    warm = run_warmup(config, model, tokenizer, corpus, corpus_path, out_dir, len(train_labels),
                      base_ranks=base_ranks(model), may_train=distributed.world_size() == 1)
    trainer, history = _fit(config, model, tokenizer, groups, corpus, split, out_dir, resume)
    chosen = _keep_chosen(trainer, history, split, config, corpus, tokenizer)
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    steps = trainer.state.global_step
    with distributed.main_first() as main:  # one process writes the student, its report and manifest
        if not main:
            return TrainResult(out_dir / "model", {}, None, steps, time.perf_counter() - start, split.signal,
                               checkpoint=chosen)
        return _finish(config, trainer.model, tokenizer, corpus, split, out_dir, start, steps, chosen, warm,
                       {"labels": labels_path, "corpus": corpus_path, "qrels": qrels_path, "dev_run": dev_run_path},
                       qrels_kind, len(groups), losses[-1] if losses else None)


def _prepare_checkpoints(config: StudentTrainConfig, out_dir: Path, resume: bool) -> tuple[Path, str | None]:
    """(checkpoint dir, checkpoint to resume from); checkpoints of another config (or no resume) are removed."""
    import shutil

    ckpt_dir = out_dir / "checkpoints"
    hash_file = ckpt_dir / "config_hash.txt"
    chash = config_hash(config.to_dict())
    with distributed.main_first() as main:  # rank 0 clears stale checkpoints and writes the hash; the others then read
        if main and ckpt_dir.exists() and not (resume and hash_file.exists()
                                               and hash_file.read_text().strip() == chash):
            shutil.rmtree(ckpt_dir)
        resume_from = last_good_checkpoint(ckpt_dir) if resume and ckpt_dir.exists() else None
        if resume_from:
            logger.info("resuming student training from %s", resume_from)
        if main:
            ckpt_dir.mkdir(parents=True, exist_ok=True)
            with atomic_write(hash_file) as fh:
                fh.write(chash)
    return ckpt_dir, resume_from


def _load_history(ckpt_dir: Path, resume_from: str | None) -> dict[int, dict[str, float]]:
    """Per-query dev nDCG@10 by step, as far as the checkpoint resumed from (later entries were not kept)."""
    path = ckpt_dir / _HISTORY_FILE
    if not resume_from or not path.is_file():
        return {}
    upto = int(resume_from.rsplit("-", 1)[-1])
    return {int(k): v for k, v in json.loads(path.read_text()).items() if int(k) <= upto}


def _fit(config: StudentTrainConfig, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
         groups: list[PairGroup], corpus: Mapping[str, Document], split: DevSplit, out_dir: Path,
         resume: bool) -> tuple[Any, dict[int, dict[str, float]]]:
    """Run the Trainer; returns it and the per-query dev history of every evaluated step."""
    import torch
    from transformers import TrainingArguments

    n_steps = config.max_steps or max(config.min_steps, int(len(groups) / config.batch_size * config.epochs + 0.999))
    eval_steps = min(config.eval_steps, n_steps)
    ckpt_dir, resume_from = _prepare_checkpoints(config, out_dir, resume)
    history = _load_history(ckpt_dir, resume_from)
    args = TrainingArguments(
        output_dir=str(ckpt_dir), max_steps=n_steps, per_device_train_batch_size=config.batch_size,
        learning_rate=config.learning_rate, warmup_ratio=config.warmup_ratio, weight_decay=config.weight_decay,
        eval_strategy="steps", eval_steps=eval_steps, save_strategy="steps", save_steps=eval_steps,
        # the best-by-mean checkpoint is kept by the Trainer's rotation; _keep_chosen applies checkpoint_rule
        save_total_limit=config.save_total_limit, load_best_model_at_end=False, metric_for_best_model="ndcg@10",
        greater_is_better=True, logging_steps=max(1, min(10, eval_steps)), report_to="none", seed=config.seed,
        remove_unused_columns=False, dataloader_num_workers=0, dataloader_pin_memory=torch.cuda.is_available(),
        disable_tqdm=True, save_safetensors=True, **_precision(config),
        # under torchrun on CPU, accelerate sets up data parallelism (gloo) only when told the device is the CPU;
        # otherwise every rank would train alone on all the data and save the same checkpoints at the same time
        use_cpu=distributed.world_size() > 1 and not torch.cuda.is_available(),
    )
    if args.world_size != distributed.world_size():  # never train alone in each process without saying so
        raise ConfigError(f"the Trainer sees {args.world_size} process(es) of the {distributed.world_size()} the "
                          "launcher started: it would not train data-parallel (check accelerate's configuration)")
    trainer = _make_trainer(config, model, tokenizer, args, groups, corpus, split, history, ckpt_dir / _HISTORY_FILE)
    trainer.train(resume_from_checkpoint=resume_from)
    distributed.barrier()  # rank 0 saves and rotates the checkpoints; the others read them only once it is done
    return trainer, history


def _make_trainer(config: StudentTrainConfig, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                  args: Any, groups: list[PairGroup], corpus: Mapping[str, Document], split: DevSplit,
                  history: dict[int, dict[str, float]], history_path: Path) -> Any:
    import torch
    from transformers import Trainer

    from distill.core.cross_encoder import PairEncoder
    from distill.student.dev_signal import dev_evaluate
    from distill.student.loss import HybridDistillLoss

    loss_fn = HybridDistillLoss(config.loss)
    encoder = PairEncoder(tokenizer.backend_tokenizer, config.model.caps)
    group_size = 1 + config.pairs.n_negatives

    def collate(items: list[int]) -> dict[str, torch.Tensor]:
        batch = [groups[i] for i in items]
        enc = {k: torch.from_numpy(v) for k, v in encoder.batch([g.query for g in batch for _ in g.doc_ids],
                                                                [corpus[d].full_text for g in batch
                                                                 for d in g.doc_ids]).items()}
        enc["teacher_scores"] = torch.tensor([g.teacher_scores for g in batch], dtype=torch.float32)
        return enc

    class _DistillTrainer(Trainer):
        def create_optimizer(self):  # noqa: ANN202 - the fresh head may learn faster than the pre-trained encoder
            if self.optimizer is None and config.head_learning_rate is not None:
                head = {id(p) for n, p in self.model.named_parameters() if n.startswith("classifier")}
                params = [p for p in self.model.parameters() if p.requires_grad]
                param_groups = [{"params": [p for p in params if id(p) not in head], "lr": config.learning_rate},
                                {"params": [p for p in params if id(p) in head], "lr": config.head_learning_rate}]
                self.optimizer = torch.optim.AdamW(param_groups, lr=config.learning_rate,
                                                   weight_decay=config.weight_decay)
            return super().create_optimizer()

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: ANN001
            teacher = inputs.pop("teacher_scores")
            logits = model(**inputs).logits.view(-1, group_size).float()
            loss = loss_fn(logits, teacher)
            return (loss, logits) if return_outputs else loss

        def evaluate(self, eval_dataset=None, ignore_keys=None,  # noqa: ANN001
                     metric_key_prefix: str = "eval") -> dict[str, float]:
            _, res, per_query = dev_evaluate(_reranker(self.model, tokenizer, config, corpus), split)
            history[self.state.global_step] = per_query
            if self.is_world_process_zero():
                write_json(history_path, {str(k): v for k, v in sorted(history.items())})
            metrics = {f"{metric_key_prefix}_{k}": v for k, v in res.items()}
            metrics["epoch"] = self.state.epoch or 0.0
            self.log(metrics)
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
            return metrics

    return _DistillTrainer(model=model, args=args, train_dataset=list(range(len(groups))),
                           eval_dataset=[0], data_collator=collate, callbacks=[_progress_callback()])


def _progress_callback() -> Any:
    from transformers import TrainerCallback

    class _Progress(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201
            from distill.core.fault_injection import fault_point

            fault_point("student:checkpoint")

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
            if logs:
                logger.info("step %d/%d %s", state.global_step, state.max_steps,
                            {k: float(f"{v:.4g}") for k, v in logs.items() if isinstance(v, float)})

    return _Progress()


def _keep_chosen(trainer: Any, history: dict[int, dict[str, float]], split: DevSplit, config: StudentTrainConfig,
                 corpus: Mapping[str, Document], tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
    """Apply ``checkpoint_rule`` to the evaluated steps (the final one evaluated too) and load the chosen weights
    into ``trainer.model``; returns ``{"step", "rule", "reason"}``."""
    from distill.student.dev_signal import choose_checkpoint, dev_evaluate, resolve_rule

    final = trainer.state.global_step
    if final not in history:
        history[final] = dev_evaluate(_reranker(trainer.model, tokenizer, config, corpus), split)[2]
    rule = resolve_rule(config.checkpoint_rule, split.signal)
    step, reason = choose_checkpoint(history, rule, config.checkpoint_margin_se)
    if step != final:
        path = Path(trainer.args.output_dir) / f"checkpoint-{step}" / "model.safetensors"
        if path.is_file():
            from safetensors.torch import load_file

            trainer.model.load_state_dict(load_file(str(path)), strict=True)
        else:  # rotated away: only the best-by-mean and the newest are kept
            logger.warning("student: checkpoint of step %d is gone; keeping the final model (step %d)", step, final)
            step, reason = final, f"final step {final} (the chosen step {step} was not kept on disk)"
    logger.info("student keeps step %d (%s): %s", step, rule, reason)
    return {"step": step, "rule": rule, "reason": reason}


def _finish(config: StudentTrainConfig, best: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
            corpus: Mapping[str, Document], split: DevSplit, out_dir: Path, start: float, steps: int,
            chosen: dict[str, Any], warm: WarmupOutcome, inputs: Mapping[str, str | Path | None], qrels_kind: str,
            n_groups: int, train_loss: float | None = None) -> TrainResult:
    """Save the chosen student with its dev run and interpolation, the report and the manifest."""
    from distill.core.formats import write_run
    from distill.student.dev_signal import dev_evaluate, dev_signal_check
    from distill.student.model import save_student

    dev_run, dev_metrics, per_query = dev_evaluate(_reranker(best, tokenizer, config, corpus), split)
    check = dev_signal_check(split.qrels, dev_run, per_query)
    logger.info("student: dev %s; random order of the same candidates %.4f (z = %.1f over %d queries)", dev_metrics,
                check.random_ndcg10, check.z if math.isfinite(check.z) else float("nan"), check.n_queries)
    model_dir = out_dir / "model"
    interp = None
    with atomic_dir(model_dir) as tmp:
        save_student(best, tokenizer, tmp, config.model.caps)
        write_run(tmp / "dev_run.student.trec", dev_run, tag="student")
        if split.from_run:
            interp = _interpolation(config, split, dev_run, qrels_kind)
            interp.save(tmp / "interpolation.json")
    result = TrainResult(model_dir, dev_metrics, model_dir / "interpolation.json" if interp else None, steps,
                         time.perf_counter() - start, split.signal, check.to_dict(), chosen, warm.to_dict())
    _write_report(result, interp, split, out_dir, qrels_kind)
    write_manifest(out_dir, "student", config.to_dict(), inputs={k: v for k, v in inputs.items() if v},
                   metrics={f"dev_{k}": v for k, v in dev_metrics.items()}, wall_time_s=result.wall_time_s,
                   extra={"model_dir": str(model_dir), "steps": steps, "checkpoint": chosen,
                          "dev_signal": split.signal, "n_dev_queries": len(split.qids),
                          "dev_candidates": f"top {split.top_k} of the dev run" if split.from_run
                          else "every labelled candidate", "dev_check": result.dev_check,
                          "warmup": result.warmup, "n_train_groups": n_groups, "regression": result.regression,
                          "train_loss_last": train_loss, "world_size": distributed.world_size(),
                          "base_model": _resolved_base(config.model.base)})
    return result


def _interpolation(config: StudentTrainConfig, split: DevSplit, dev_run: Run, qrels_kind: str) -> InterpolationResult:
    from distill.student.interpolate import tune_alpha

    if qrels_kind == "real" and split.signal == "qrels":
        return tune_alpha(split.qrels, split.first_stage, dev_run, config.interpolation)
    return _conservative_interpolation(split.qrels, split.first_stage, dev_run, config.interpolation, qrels_kind)


def _write_report(result: TrainResult, interp: InterpolationResult | None, split: DevSplit, out_dir: Path,
                  qrels_kind: str) -> None:
    """``OUT/student_report.json`` and ``.md``: with a dev run, the verdict first (the result lands in ``result``)."""
    from dataclasses import asdict

    from distill.student.guard import dev_verdict

    report: dict[str, Any] = {"dev_signal": split.signal, "n_dev_queries": len(split.qids),
                              "dev_metrics": result.dev_metrics, "dev_check": result.dev_check,
                              "checkpoint": result.checkpoint, "warmup": result.warmup, "steps": result.steps,
                              "wall_time_s": round(result.wall_time_s, 1)}
    lines = [f"# Student training report ({result.steps} steps, {result.wall_time_s:.0f} s)", ""]
    if interp is not None:
        labels = "real qrels" if split.signal == "qrels" and qrels_kind == "real" else split.signal
        verdict = dev_verdict(interp, labels)
        result.regression, result.verdict = verdict.regression, verdict.message
        report.update({"verdict": verdict.message, "regression": verdict.regression, "interpolation": asdict(interp)})
        lines = [f"**{verdict.message}**", "", *lines, "| system | dev nDCG@10 |", "|---|---:|",
                 f"| first stage | {verdict.first_stage:.4f} |", f"| student | {verdict.student:.4f} |",
                 f"| student interpolated (a = {verdict.alpha:.2f}) | {verdict.interpolated:.4f} |", ""]
    c, w = result.dev_check, result.warmup
    z = "n/a" if c["z"] is None else f"{c['z']:.1f}"
    lines += [f"Dev signal: {split.signal}, {len(split.qids)} queries; nDCG@10 {c['ndcg10']:.4f} vs "
              f"{c['random_ndcg10']:.4f} for a random order of the same candidates (z = {z}).", "",
              f"Checkpoint: step {result.checkpoint['step']} ({result.checkpoint['rule']}: "
              f"{result.checkpoint['reason']}).", "",
              f"Warm-up on the corpus: {'ran' if w['ran'] else 'off'} ({w['reason']}).", ""]
    result.report_path = write_json(out_dir / REPORT_FILE, report)
    with atomic_write(out_dir / "student_report.md") as fh:
        fh.write("\n".join(lines))


def _conservative_interpolation(dev_qrels: Qrels, first_stage: Run, dev_run: Run, base: InterpolationConfig,
                                qrels_kind: str) -> InterpolationResult:
    """:data:`CONSERVATIVE_ALPHA` on z-scored runs; the dev scores are reported, not used to choose."""
    from distill.core.evaluation import evaluate
    from distill.student.interpolate import interpolate_runs

    cfg = InterpolationConfig(first_stage_norm="zscore", student_norm="zscore", grid_steps=base.grid_steps,
                              metric=base.metric)
    dev = {q: d for q, d in dev_run.items() if q in dev_qrels and d}

    def score(a: float) -> float:
        return evaluate(dev_qrels, interpolate_runs(first_stage, dev, a, cfg), [cfg.metric]).metrics[cfg.metric]

    logger.info("interpolation: no real judgments (%s dev labels); using the conservative a=%.2f", qrels_kind,
                CONSERVATIVE_ALPHA)
    return InterpolationResult(CONSERVATIVE_ALPHA, cfg.first_stage_norm, cfg.student_norm, cfg.metric,
                               score(CONSERVATIVE_ALPHA), score(0.0), score(1.0), len(dev),
                               tuned_on=f"not tuned: conservative default ({qrels_kind} dev labels)")


def _resolved_base(spec: str) -> dict[str, Any]:
    """The student base as resolved (name, revision: the Hub commit or the package version, source, path)."""
    from distill.core.base_models import resolve_base

    return resolve_base(spec, "student").to_dict()
