"""Student training: distil teacher labels into the cross-encoder with the hybrid loss.

Why the HF ``Trainer`` and not sentence-transformers' ``CrossEncoderTrainer``: our training unit is
a *group* ``[d+, d-_1..d-_n]`` carrying one teacher score per document, and the loss needs the
``(batch, group)`` score matrix. With HF Trainer that is one ``compute_loss`` override plus a
collator; CrossEncoderTrainer would route the same thing through its column-per-text dataset
convention and a loss module wrapper for no gain. HF Trainer gives us what the issue asks for
directly: checkpoints and ``resume_from_checkpoint``, ``load_best_model_at_end`` on a dev metric,
fp16/bf16 on GPU, and accelerate multi-GPU. The saved artifact is a plain
``BertForSequenceClassification`` either way, which CrossEncoder loads (see :mod:`.model`).

Dev evaluation: every ``eval_steps`` the current model reranks the dev queries' candidates and
nDCG@10 is computed with :func:`distill.evaluation.evaluate`; the best checkpoint is kept.
Dev queries are a deterministic slice (by qid hash) of the labelled queries that have qrels; their
candidates are the first-stage run when given, otherwise the labelled candidates.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.config import from_mapping, to_dict
from distill.atomic_io import atomic_dir, config_hash
from distill.data import Qrels, Run
from distill.errors import ConfigError, DataError
from distill.manifest import write_manifest
from distill.student.interpolate import InterpolationConfig
from distill.student.loss import LossWeights
from distill.student.model import StudentModelConfig
from distill.student.normalize import NormalizationConfig
from distill.student.pairs import PairConfig, PairGroup

__all__ = ["StudentTrainConfig", "TrainResult", "is_dev_qid", "train_student"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudentTrainConfig:
    model: StudentModelConfig = field(default_factory=StudentModelConfig)
    pairs: PairConfig = field(default_factory=PairConfig)
    normalization: NormalizationConfig = field(default_factory=NormalizationConfig)
    loss: LossWeights = field(default_factory=LossWeights)
    interpolation: InterpolationConfig = field(default_factory=InterpolationConfig)
    learning_rate: float = 3e-5
    #: groups per optimiser step (each group is 1 + n_negatives pairs)
    batch_size: int = 8
    #: total optimiser steps; None = ``epochs`` passes over the groups
    max_steps: int | None = None
    epochs: float = 1.0
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    eval_steps: int = 50
    #: fraction of labelled queries (with qrels) held out as the dev split
    dev_fraction: float = 0.15
    dev_max_queries: int = 100
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


def is_dev_qid(qid: str, fraction: float) -> bool:
    """Deterministic, order-independent split: a qid is dev when its hash falls below ``fraction``."""
    h = int(hashlib.sha1(qid.encode()).hexdigest()[:8], 16)
    return h / 0xFFFFFFFF < fraction


@dataclass
class TrainResult:
    model_dir: Path
    dev_metrics: dict[str, float]
    interpolation_path: Path | None
    steps: int
    wall_time_s: float


def _precision(cfg: StudentTrainConfig) -> dict[str, bool]:
    import torch

    if not torch.cuda.is_available() or cfg.precision == "fp32":
        return {}
    if cfg.precision == "bf16" or (cfg.precision == "auto" and torch.cuda.is_bf16_supported()):
        return {"bf16": True}
    return {"fp16": True}


def train_student(config: StudentTrainConfig, labels_path: str | Path, corpus_path: str | Path,
                  qrels_path: str | Path | None, out_dir: str | Path, dev_run_path: str | Path | None = None,
                  resume: bool = True) -> TrainResult:
    """Train, keep the best dev checkpoint, tune interpolation; the student lands in ``out_dir/model``.

    ``out_dir/checkpoints`` holds Trainer checkpoints; an interrupted run resumes from the last one
    (when ``resume`` and the config hash matches). ``out_dir/model/interpolation.json`` carries the
    tuned first-stage weight and normalisations.
    """
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments
    from transformers.trainer_utils import get_last_checkpoint

    from distill.data import read_corpus, read_qrels, read_run, write_run
    from distill.evaluation import evaluate
    from distill.labels import read_labels
    from distill.student.interpolate import tune_alpha
    from distill.student.loss import HybridDistillLoss
    from distill.student.model import build_student, encode_pairs, rerank_with_student, save_student
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

    judged = [lq for lq in labels if any(r >= 1 for r in qrels.get(lq.qid, {}).values())]
    dev_ids = {lq.qid for lq in judged if is_dev_qid(lq.qid, config.dev_fraction)}
    if not dev_ids and len(judged) >= 2:  # tiny sets: hold out at least one query
        dev_ids = {judged[-1].qid}
    dev_ids = set(sorted(dev_ids)[: config.dev_max_queries])
    if not dev_ids:
        raise DataError("no labelled query has qrels, so there is no dev split to select the best checkpoint; "
                        "pass --qrels for the labelled queries", path=labels_path)
    train_labels = [lq for lq in labels if lq.qid not in dev_ids]
    groups = build_groups(train_labels, qrels, config.pairs, config.normalization)
    query_text = {lq.qid: lq.query for lq in labels}
    from distill.data import Query

    dev_queries = {q: Query(q, query_text[q]) for q in dev_ids}
    dev_qrels = {q: qrels[q] for q in dev_ids}
    if dev_run_path:
        first_stage: Run = {q: d for q, d in read_run(dev_run_path).items() if q in dev_ids}
        if not first_stage:
            raise DataError("the dev run has none of the dev queries; pass a first-stage run of the training queries",
                            path=dev_run_path)
    else:
        first_stage = {lq.qid: {d.doc_id: 0.0 for d in lq.docs} for lq in labels if lq.qid in dev_ids}
    logger.info("student: %d training groups of %d docs from %d queries; %d dev queries",
                len(groups), 1 + config.pairs.n_negatives, len(train_labels), len(dev_ids))

    torch.manual_seed(config.seed)
    model, tokenizer = build_student(config.model)
    loss_fn = HybridDistillLoss(config.loss)
    max_len = config.model.max_seq_len
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
        enc = dict(encode_pairs(tokenizer, qs, ds, max_len))
        enc["teacher_scores"] = torch.tensor([g.teacher_scores for g in batch], dtype=torch.float32)
        return enc

    def dev_rerank(m: Any) -> Run:
        return rerank_with_student(m, tokenizer, corpus, dev_queries, first_stage, config.dev_top_k,
                                   config.eval_batch_size, max_len)

    class _DistillTrainer(Trainer):
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
        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
            if logs:
                logger.info("step %d/%d %s", state.global_step, state.max_steps,
                            {k: round(v, 4) for k, v in logs.items() if isinstance(v, float)})

    n_steps = config.max_steps or max(1, int(len(groups) / config.batch_size * config.epochs + 0.999))
    eval_steps = min(config.eval_steps, n_steps)
    ckpt_dir = out_dir / "checkpoints"
    hash_file = ckpt_dir / "config_hash.txt"
    chash = config_hash(config.to_dict())
    resume_from = None
    if resume and ckpt_dir.exists() and hash_file.exists() and hash_file.read_text().strip() == chash:
        resume_from = get_last_checkpoint(str(ckpt_dir))
        if resume_from:
            logger.info("resuming student training from %s", resume_from)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    hash_file.write_text(chash)
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
        save_student(best, tokenizer, tmp, max_len)
        write_run(tmp / "dev_run.student.trec", dev_run, tag="student")
        if dev_run_path:
            interp = tune_alpha(dev_qrels, first_stage, dev_run, config.interpolation)
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
                                            "best_checkpoint": trainer.state.best_model_checkpoint})
    return TrainResult(model_dir, dev_metrics, interp_path, trainer.state.global_step, wall)
