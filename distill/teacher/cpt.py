"""Continual pre-training (DisRanker / RankingGPT stage 1): generate a relevant document from the query.

The loss is the causal-LM cross-entropy on the target (``title + text`` + end token) only: prompt
(query) tokens and padding get label -100. The output is a plain HF causal-LM directory.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from distill.core import distributed
from distill.core.atomic_io import atomic_dir
from distill.core.formats import read_corpus, read_qrels, read_queries
from distill.core.manifest import write_manifest
from distill.teacher import _train
from distill.teacher._training_pairs import QueryDocPair, pairs_from_qrels, read_pairs_jsonl, subsample
from distill.teacher.config import CPTConfig
from distill.teacher.decoder_ranker import end_token_id, pad_rows

__all__ = ["CPTExample", "build_cpt_example", "collate_cpt", "load_cpt_pairs", "run_cpt"]

logger = logging.getLogger(__name__)

IGNORE = -100
CPT_MODEL_SUBDIR = "model"


class CPTExample:
    __slots__ = ("input_ids", "n_prompt")

    def __init__(self, input_ids: list[int], n_prompt: int):
        self.input_ids = input_ids
        self.n_prompt = n_prompt


def build_cpt_example(tokenizer, pair: QueryDocPair, prompt_template: str, target_template: str,  # noqa: ANN001
                      max_length: int, end_id: int) -> CPTExample:
    """Prompt ids (with the tokenizer's own special tokens) + target ids + end token, target truncated."""
    prompt = tokenizer(prompt_template.format(query=pair.query), add_special_tokens=True)["input_ids"]
    prompt = prompt[: max_length // 2]  # a very long query must still leave room for a target
    target = tokenizer(target_template.format(title=pair.title, text=pair.text).strip(),
                       add_special_tokens=False)["input_ids"]
    target = target[: max_length - len(prompt) - 1] + [end_id]
    return CPTExample(list(prompt) + list(target), len(prompt))


def collate_cpt(examples: Sequence[CPTExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch; ``labels`` = input ids on target tokens, -100 on prompt tokens and padding."""
    batch = pad_rows([e.input_ids for e in examples], pad_id, "right")
    labels = batch["input_ids"].clone()
    labels[batch["attention_mask"] == 0] = IGNORE
    for i, e in enumerate(examples):
        labels[i, : e.n_prompt] = IGNORE
    batch["labels"] = labels
    return batch


def load_cpt_pairs(config: CPTConfig) -> list[QueryDocPair]:
    if config.pairs:
        pairs = read_pairs_jsonl(config.pairs)
    else:
        pairs = pairs_from_qrels(read_queries(config.queries), read_qrels(config.qrels), read_corpus(config.corpus))
    return subsample(pairs, config.max_pairs, config.seed)


def _inputs(config: CPTConfig) -> dict[str, str]:
    return {k: v for k, v in {"pairs": config.pairs, "queries": config.queries, "qrels": config.qrels,
                              "corpus": config.corpus}.items() if v}


def run_cpt(config: CPTConfig, out_dir: str | Path, progress: bool = False) -> Path:
    """Train (or resume from the checkpoints in ``out_dir``) and return the HF causal-LM directory ``out_dir/model``;
    whether a finished run is reused is the stage runner's decision, not this function's."""
    config.require_data()
    distributed.init()
    out_dir = Path(out_dir)
    model_dir = out_dir / CPT_MODEL_SUBDIR
    resolved = config.to_dict()
    started = time.perf_counter()
    lm = _train.load_trainable_lm(config)
    base, tokenizer, model, peft_model, device, dtype = (lm.base, lm.tokenizer, lm.model, lm.peft_model, lm.device,
                                                         lm.dtype)
    model.to(device)
    end_id = end_token_id(tokenizer, model.config)
    pairs = load_cpt_pairs(config)
    examples = [build_cpt_example(tokenizer, p, config.prompt_template, config.target_template, config.max_length,
                                  end_id)
                for p in pairs]
    pad_id = tokenizer.pad_token_id

    def loss_fn(batch: Sequence[CPTExample]) -> dict[str, torch.Tensor]:
        enc = {k: v.to(device) for k, v in collate_cpt(batch, pad_id).items()}
        return {"loss": model(**enc, use_cache=False).loss}

    params = [p for p in model.parameters() if p.requires_grad]
    result = _train.train_loop(model, [{"params": params}], examples, loss_fn, config, out_dir, device, dtype,
                               progress=progress, stage="cpt")
    _train.merge_lora(peft_model)
    model.config.use_cache = True
    if not distributed.is_main():  # rank 0 writes the model; the others wait for it
        distributed.barrier()
        return model_dir
    with atomic_dir(model_dir) as tmp:
        model.to("cpu").save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    metrics = {"pairs": len(examples), "steps": result.steps, "resumed_from_step": result.resumed_from_step,
               "final_loss": result.final_loss, "mean_loss_last_10": result.mean_loss_last_10}
    write_manifest(out_dir, "teacher-cpt", resolved, inputs=_inputs(config), metrics=metrics,
                   wall_time_s=time.perf_counter() - started, extra={"base_model_path": str(base)})
    _train.remove_checkpoints(out_dir)
    logger.info("cpt: wrote %s (%d steps, last loss %.4f)", model_dir, result.steps, result.final_loss)
    distributed.barrier()
    return model_dir
