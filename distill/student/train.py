"""Student training: distil teacher labels into the cross-encoder with the hybrid loss.

Why the HF ``Trainer`` and not sentence-transformers' ``CrossEncoderTrainer``: our training unit is
a *group* ``[d+, d-_1..d-_n]`` carrying one teacher score per document, and the loss needs the
``(batch, group)`` score matrix. With HF Trainer that is one ``compute_loss`` override plus a
collator; CrossEncoderTrainer would route the same thing through its column-per-text dataset
convention and a loss module wrapper for no gain. HF Trainer gives us what the issue asks for
directly: checkpoints and ``resume_from_checkpoint``, ``load_best_model_at_end`` on a dev metric,
fp16/bf16 on GPU, and accelerate multi-GPU. The saved artifact is a plain
``BertForSequenceClassification`` either way, which CrossEncoder loads (see :mod:`.model`).

Dev evaluation: every ``eval_steps`` the current model reranks the dev queries' candidates (through
the shared :mod:`distill.core.cross_encoder` scorer, the same truncation as serving) and nDCG@10 is
computed with :func:`distill.core.evaluation.evaluate`; the best checkpoint is kept. Dev queries are a
deterministic slice (by qid hash) of the labelled queries, at least ``dev_min_queries`` of them. With
qrels the dev signal is the qrels; without any (labels from a teacher alone) it is the teacher's own
ranking of the held-out queries (its top ``pseudo_qrels_top`` candidates count as relevant), and the
result says so (``dev_signal``). Candidates are the first-stage run when given, else the labelled ones.

Interpolation with the first stage is tuned on the dev split only when the dev qrels are real
judgments (``qrels_kind="real"``); with synthetic or teacher-derived dev labels a documented
conservative weight is written instead (:data:`CONSERVATIVE_ALPHA`).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.core.atomic_io import atomic_dir, atomic_write, config_hash
from distill.core.config import from_mapping, to_dict
from distill.core.formats import Qrels, Run
from distill.core.errors import ConfigError, DataError
from distill.core.manifest import write_manifest
from distill.student.interpolate import InterpolationConfig, InterpolationResult
from distill.student.loss import LossWeights
from distill.student.model import StudentModelConfig
from distill.student.normalize import NormalizationConfig
from distill.student.pairs import PairConfig, PairGroup

__all__ = ["CONSERVATIVE_ALPHA", "StudentTrainConfig", "TrainResult", "choose_dev", "last_good_checkpoint",
           "train_student"]

#: first-stage weight used when no real judgments exist to tune it: z-scored first stage and z-scored
#: student, the first stage keeping the larger say (a reranker tuned on nothing must not take over).
CONSERVATIVE_ALPHA = 0.6

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudentTrainConfig:
    model: StudentModelConfig = field(default_factory=StudentModelConfig)
    pairs: PairConfig = field(default_factory=PairConfig)
    normalization: NormalizationConfig = field(default_factory=NormalizationConfig)
    loss: LossWeights = field(default_factory=LossWeights)
    interpolation: InterpolationConfig = field(default_factory=InterpolationConfig)
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
    #: fraction of labelled queries held out as the dev split (at least dev_min_queries, at most dev_max_queries)
    dev_fraction: float = 0.15
    dev_min_queries: int = 30
    dev_max_queries: int = 100
    #: without qrels: the teacher's top-N candidates of a dev query are its pseudo-relevant docs
    pseudo_qrels_top: int = 3
    #: candidates reranked per dev query
    dev_top_k: int = 20
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
    if len(pool) < 2:
        raise DataError(f"{len(pool)} labelled queries: a dev split needs at least 2 (one to train on, one to check)")
    ranked = sorted(pool, key=lambda lq: (_qid_hash(lq.qid), lq.qid))
    n = min(round(len(pool) * config.dev_fraction), config.dev_max_queries)
    n = max(n, min(config.dev_min_queries, len(pool) // 2), 1)
    dev = ranked[:n]
    if judged:
        return {lq.qid for lq in dev}, {lq.qid: qrels[lq.qid] for lq in dev}, "qrels"
    top = config.pseudo_qrels_top
    pseudo = {lq.qid: {d.doc_id: 1 for d in sorted(lq.docs, key=lambda d: (-d.score, d.doc_id))[:top]} for lq in dev}
    logger.warning("no labelled query has qrels: the dev split (%d queries) is judged against the teacher's own top %d "
                   "candidates, so the student is chosen for agreeing with the teacher", len(dev), top)
    return {lq.qid for lq in dev}, pseudo, f"teacher ranking (top {top})"


def last_good_checkpoint(ckpt_dir: Path) -> str | None:
    """The newest Trainer checkpoint that was written completely; torn ones (a kill mid-write) are removed.

    HF Trainer writes ``trainer_state.json`` after the weights, optimiser, scheduler and RNG state, so a
    checkpoint whose state file parses, whose weights open and whose optimiser/scheduler files exist is
    complete.
    """
    import json
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
            logger.warning("student: checkpoint %s is incomplete (%s: %s); removing it and resuming from an earlier one",
                           path, type(exc).__name__, exc)
            shutil.rmtree(path, ignore_errors=True)
    return None


def _precision(cfg: StudentTrainConfig) -> dict[str, bool]:
    import torch

    if not torch.cuda.is_available() or cfg.precision == "fp32":
        return {}
    if cfg.precision == "bf16" or (cfg.precision == "auto" and torch.cuda.is_bf16_supported()):
        return {"bf16": True}
    return {"fp16": True}


def train_student(config: StudentTrainConfig, labels_path: str | Path, corpus_path: str | Path,
                  qrels_path: str | Path | None, out_dir: str | Path, dev_run_path: str | Path | None = None,
                  resume: bool = True, qrels_kind: str = "real", dev_eligible: set[str] | None = None) -> TrainResult:
    """Train, keep the best dev checkpoint, set the interpolation; the student lands in ``out_dir/model``.

    ``out_dir/checkpoints`` holds Trainer checkpoints; an interrupted run resumes from the last complete
    one (when ``resume`` and the config hash matches). ``out_dir/model/interpolation.json`` carries the
    first-stage weight and normalisations: tuned on the dev split when ``qrels_kind == "real"``, else
    :data:`CONSERVATIVE_ALPHA`.
    """
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from distill.core.cross_encoder import PairEncoder
    from distill.core.formats import read_corpus, read_qrels, read_run, write_run
    from distill.core.evaluation import evaluate
    from distill.core.label_files import read_labels
    from distill.student.interpolate import tune_alpha
    from distill.student.loss import HybridDistillLoss
    from distill.student.model import build_student, save_student, student_scorer
    from distill.student.pairs import build_groups

    start = time.perf_counter()
    out_dir = Path(out_dir)
    labels = read_labels(labels_path)
    if not labels:
        raise DataError("label file is empty; run `distilrank teacher label` first", path=labels_path)
    corpus = read_corpus(corpus_path)
    qrels: Qrels = read_qrels(qrels_path) if qrels_path else {}
    missing = sorted({d.doc_id for lq in labels for d in lq.docs if d.doc_id not in corpus})
    if missing:
        raise DataError(f"{len(missing)} labelled doc ids are not in the corpus (e.g. {missing[:3]}); "
                        f"label and train with the same corpus", path=labels_path)

    dev_ids, dev_qrels, dev_signal = choose_dev(labels, qrels, config, dev_eligible)
    train_labels = [lq for lq in labels if lq.qid not in dev_ids]
    groups = build_groups(train_labels, qrels, config.pairs, config.normalization)
    query_text = {lq.qid: lq.query for lq in labels}
    from distill.core.formats import Query

    dev_queries = {q: Query(q, query_text[q]) for q in dev_ids}
    if dev_run_path:
        first_stage: Run = {q: d for q, d in read_run(dev_run_path).items() if q in dev_ids}
        if not first_stage:
            raise DataError("the dev run has none of the dev queries; pass a first-stage run of the training queries",
                            path=dev_run_path)
    else:
        first_stage = {lq.qid: {d.doc_id: 0.0 for d in lq.docs} for lq in labels if lq.qid in dev_ids}
    logger.info("student: %d training groups of %d docs from %d queries; %d dev queries (dev signal: %s)",
                len(groups), 1 + config.pairs.n_negatives, len(train_labels), len(dev_ids), dev_signal)

    from transformers import set_seed

    set_seed(config.seed)  # before the head is created: a resumed run must build the same initial model
    model, tokenizer = build_student(config.model)
    loss_fn = HybridDistillLoss(config.loss)
    caps = config.model.caps
    encoder = PairEncoder(tokenizer.backend_tokenizer, caps)
    group_size = 1 + config.pairs.n_negatives

    class _Groups(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(groups)

        def __getitem__(self, i: int) -> dict[str, int]:
            return {"idx": i}

    def collate(items: list[dict[str, int]]) -> dict[str, torch.Tensor]:
        batch: list[PairGroup] = [groups[it["idx"]] for it in items]
        qs = [g.query for g in batch for _ in g.doc_ids]
        ds = [corpus[d].full_text for g in batch for d in g.doc_ids]
        enc = {k: torch.from_numpy(v) for k, v in encoder.batch(qs, ds).items()}
        enc["teacher_scores"] = torch.tensor([g.teacher_scores for g in batch], dtype=torch.float32)
        return enc

    def dev_rerank(m: Any) -> Run:
        return student_scorer(m, tokenizer, caps, config.eval_batch_size).rerank(corpus, dev_queries, first_stage,
                                                                                config.dev_top_k)

    class _DistillTrainer(Trainer):
        def create_optimizer(self):  # noqa: ANN202 - the fresh head may learn faster than the pre-trained encoder
            if self.optimizer is None and config.head_learning_rate is not None:
                head = {id(p) for n, p in self.model.named_parameters() if n.startswith("classifier")}
                params = [p for p in self.model.parameters() if p.requires_grad]
                groups = [{"params": [p for p in params if id(p) not in head], "lr": config.learning_rate},
                          {"params": [p for p in params if id(p) in head], "lr": config.head_learning_rate}]
                self.optimizer = torch.optim.AdamW(groups, lr=config.learning_rate, weight_decay=config.weight_decay)
            return super().create_optimizer()

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: ANN001
            teacher = inputs.pop("teacher_scores")
            logits = model(**inputs).logits.view(-1, group_size).float()
            loss = loss_fn(logits, teacher)
            return (loss, logits) if return_outputs else loss

        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:  # noqa: ANN001
            run = dev_rerank(self.model)
            res = evaluate(dev_qrels, run, ["ndcg@10", "mrr@10"]).metrics
            metrics = {f"{metric_key_prefix}_{k}": v for k, v in res.items()}
            metrics["epoch"] = self.state.epoch or 0.0
            self.log(metrics)
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
            return metrics

    class _Progress(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201
            from distill.core.fault_injection import fault_point

            fault_point("student:checkpoint")

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
            if logs:
                logger.info("step %d/%d %s", state.global_step, state.max_steps,
                            {k: float(f"{v:.4g}") for k, v in logs.items() if isinstance(v, float)})

    n_steps = config.max_steps or max(config.min_steps, int(len(groups) / config.batch_size * config.epochs + 0.999))
    eval_steps = min(config.eval_steps, n_steps)
    ckpt_dir = out_dir / "checkpoints"
    hash_file = ckpt_dir / "config_hash.txt"
    chash = config_hash(config.to_dict())
    resume_from = None
    if ckpt_dir.exists() and not (resume and hash_file.exists() and hash_file.read_text().strip() == chash):
        import shutil

        shutil.rmtree(ckpt_dir)  # checkpoints of another config (or --no-resume) never leak into this run
    if resume and ckpt_dir.exists():
        resume_from = last_good_checkpoint(ckpt_dir)
        if resume_from:
            logger.info("resuming student training from %s", resume_from)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    with atomic_write(hash_file) as fh:
        fh.write(chash)
    args = TrainingArguments(
        output_dir=str(ckpt_dir), max_steps=n_steps, per_device_train_batch_size=config.batch_size,
        learning_rate=config.learning_rate, warmup_ratio=config.warmup_ratio, weight_decay=config.weight_decay,
        eval_strategy="steps", eval_steps=eval_steps, save_strategy="steps", save_steps=eval_steps,
        save_total_limit=config.save_total_limit, load_best_model_at_end=True, metric_for_best_model="ndcg@10",
        greater_is_better=True, logging_steps=max(1, min(10, eval_steps)), report_to="none", seed=config.seed,
        remove_unused_columns=False, dataloader_num_workers=0, dataloader_pin_memory=torch.cuda.is_available(), disable_tqdm=True, save_safetensors=True,
        **_precision(config),
    )
    trainer = _DistillTrainer(model=model, args=args, train_dataset=_Groups(), eval_dataset=_Groups(),
                              data_collator=collate, callbacks=[_Progress()])
    trainer.train(resume_from_checkpoint=resume_from)
    best = trainer.model
    dev_run = dev_rerank(best)
    dev_metrics = evaluate(dev_qrels, dev_run, ["ndcg@10", "mrr@10"]).metrics
    logger.info("best student checkpoint: dev %s (%s)", dev_metrics, trainer.state.best_model_checkpoint)

    model_dir = out_dir / "model"
    interp_path = None
    with atomic_dir(model_dir) as tmp:
        save_student(best, tokenizer, tmp, caps)
        write_run(tmp / "dev_run.student.trec", dev_run, tag="student")
        if dev_run_path:
            if qrels_kind == "real" and dev_signal == "qrels":
                interp = tune_alpha(dev_qrels, first_stage, dev_run, config.interpolation)
            else:
                interp = _conservative_interpolation(dev_qrels, first_stage, dev_run, config.interpolation, qrels_kind)
            interp.save(tmp / "interpolation.json")
    if dev_run_path:
        interp_path = model_dir / "interpolation.json"
    wall = time.perf_counter() - start
    inputs = {"labels": labels_path, "corpus": corpus_path}
    if qrels_path:
        inputs["qrels"] = qrels_path
    if dev_run_path:
        inputs["dev_run"] = dev_run_path
    write_manifest(out_dir, "student", config.to_dict(), inputs=inputs, metrics={f"dev_{k}": v for k, v in dev_metrics.items()},
                   wall_time_s=wall, extra={"model_dir": str(model_dir), "steps": trainer.state.global_step,
                                            "best_checkpoint": trainer.state.best_model_checkpoint,
                                            "dev_signal": dev_signal, "n_dev_queries": len(dev_ids),
                                            "n_train_groups": len(groups)})
    return TrainResult(model_dir, dev_metrics, interp_path, trainer.state.global_step, wall, dev_signal)


def _conservative_interpolation(dev_qrels: Qrels, first_stage: Run, dev_run: Run, base: InterpolationConfig,
                                qrels_kind: str) -> InterpolationResult:
    """:data:`CONSERVATIVE_ALPHA` on z-scored runs; the dev scores are reported, not used to choose."""
    from distill.core.evaluation import evaluate
    from distill.student.interpolate import interpolate_runs

    cfg = InterpolationConfig(first_stage_norm="zscore", student_norm="zscore", grid_steps=base.grid_steps, metric=base.metric)
    dev = {q: d for q, d in dev_run.items() if q in dev_qrels and d}

    def score(a: float) -> float:
        return evaluate(dev_qrels, interpolate_runs(first_stage, dev, a, cfg), [cfg.metric]).metrics[cfg.metric]

    logger.info("interpolation: no real judgments (%s dev labels); using the conservative a=%.2f", qrels_kind,
                CONSERVATIVE_ALPHA)
    return InterpolationResult(CONSERVATIVE_ALPHA, cfg.first_stage_norm, cfg.student_norm, cfg.metric,
                               score(CONSERVATIVE_ALPHA), score(0.0), score(1.0), len(dev),
                               tuned_on=f"not tuned: conservative default ({qrels_kind} dev labels)")
