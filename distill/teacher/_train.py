"""The optimisation loop shared by CPT and SFT, with resumable checkpoints.

A checkpoint ``<out>/checkpoints/step-N/`` holds the module weights (safetensors), optimiser and
scheduler state, the step and the RNG states. The batch for optimiser step ``s`` is a pure function of
``(seed, s)`` (a seeded permutation per epoch), so a resumed run sees exactly the batches it would have
seen without the interruption, and the step count continues instead of restarting.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

from distill.core import distributed
from distill.core.atomic_io import atomic_dir, config_hash, write_json
from distill.core.errors import DistilrankError, MissingPrerequisiteError
from distill.core.lazy import MissingExtraError
from distill.teacher._device import autocast
from distill.teacher.config import LoRAConfig, TrainConfig

logger = logging.getLogger(__name__)

E = TypeVar("E")
LossFn = Callable[[Sequence[E]], dict[str, torch.Tensor]]


class TrainingDivergedError(DistilrankError):
    """The loss became NaN or inf (lower the lr, use fp32/bf16 instead of fp16)."""


@dataclass
class TrainResult:
    steps: int
    resumed_from_step: int
    final_loss: float
    mean_loss_last_10: float
    wall_time_s: float


def _after_step(step: int) -> None:
    """Hook called after each optimiser step (tests use it to simulate a crash)."""
    if step == 1:
        from distill.core.fault_injection import fault_point

        fault_point(f"{_STAGE[0]}:step")


_STAGE = ["train"]


def schedule_steps(n_examples: int, config: TrainConfig) -> tuple[int, int]:
    """(optimiser steps per epoch, total optimiser steps)."""
    per_step = config.batch_size * config.grad_accum
    per_epoch = max(1, math.ceil(n_examples / per_step))
    total = config.max_steps if config.max_steps > 0 else per_epoch * config.epochs
    return per_epoch, total


def micro_batches(n_examples: int, step: int, config: TrainConfig) -> list[list[int]]:
    """Example indices of the ``grad_accum`` micro-batches of optimiser step ``step`` (0-based)."""
    per_epoch, _ = schedule_steps(n_examples, config)
    epoch, within = divmod(step, per_epoch)
    perm = list(range(n_examples))
    random.Random(config.seed * 1_000_003 + epoch).shuffle(perm)
    out = []
    for a in range(config.grad_accum):
        start = (within * config.grad_accum + a) * config.batch_size
        idx = [perm[i % n_examples] for i in range(start, start + config.batch_size)] if start < n_examples else []
        if idx:
            out.append(idx)
    return out or [[perm[0]]]


def apply_lora(model: nn.Module, lora: LoRAConfig):  # -> peft model or None
    if not lora.enabled:
        return None
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as exc:
        raise MissingExtraError("LoRA needs peft: pip install 'distilrank[lora]'", name=exc.name) from exc
    cfg = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                     target_modules=list(lora.target_modules), task_type="CAUSAL_LM")
    # peft injects the adapters into ``model``'s own modules, so the caller keeps using ``model``
    return get_peft_model(model, cfg)


@dataclass
class TrainableLM:
    """What CPT and SFT start from: the base causal LM ready to train (fp32 master weights, LoRA if enabled)."""

    base: Path
    tokenizer: object
    model: nn.Module
    peft_model: object | None
    device: torch.device
    dtype: torch.dtype


def load_trainable_lm(config: TrainConfig) -> TrainableLM:
    """Resolve ``config.base_model``, load tokenizer + causal LM, then gradient checkpointing and LoRA as configured."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distill.core.base_models import resolve_teacher_base
    from distill.teacher._device import pick_device, pick_dtype
    from distill.teacher.decoder_ranker import prepare_tokenizer

    base = resolve_teacher_base(config.base_model)
    torch.manual_seed(config.seed)  # before any parameter is created (LoRA adapters are initialised below)
    device = pick_device(config.device)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    prepare_tokenizer(tokenizer, model)
    model.config.use_cache = False
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    peft_model = apply_lora(model, config.lora)
    if peft_model is not None and config.gradient_checkpointing:
        model.enable_input_require_grads()  # frozen embeddings would cut the checkpointed graph
    return TrainableLM(Path(base), tokenizer, model, peft_model, device, pick_dtype(config.precision, device))


def merge_lora(peft_model) -> None:  # noqa: ANN001
    if peft_model is not None:
        peft_model.merge_and_unload()


def _latest_checkpoint(ckpt_root: Path) -> Path | None:
    if not ckpt_root.is_dir():
        return None
    found = [(int(p.name.split("-")[1]), p) for p in ckpt_root.glob("step-*")
             if p.is_dir() and p.name.split("-")[1].isdigit() and (p / "state.json").exists()]
    return max(found)[1] if found else None


def _save_checkpoint(ckpt_root: Path, step: int, module: nn.Module, optimizer: torch.optim.Optimizer,
                     scheduler: torch.optim.lr_scheduler.LRScheduler, cfg_hash: str, losses: list[float]) -> Path:
    from safetensors.torch import save_file, save_model

    target = ckpt_root / f"step-{step}"
    with atomic_dir(target) as tmp:
        save_model(module, str(tmp / "model.safetensors"))  # handles tied (shared) weights
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp / "optimizer.pt")
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state()
        save_file(rng, str(tmp / "rng.safetensors"))
        write_json(tmp / "state.json", {"step": step, "config_hash": cfg_hash, "losses": losses[-50:]})
    for old in ckpt_root.glob("step-*"):
        if old != target:
            shutil.rmtree(old, ignore_errors=True)
    return target


def _load_checkpoint(path: Path, module: nn.Module, optimizer: torch.optim.Optimizer,
                     scheduler: torch.optim.lr_scheduler.LRScheduler, cfg_hash: str) -> tuple[int, list[float]]:
    from safetensors.torch import load_file, load_model

    state = json.loads((path / "state.json").read_text())
    if state.get("config_hash") != cfg_hash:
        logger.warning("checkpoint %s was written with a different config; resuming anyway (delete %s to restart)",
                       path, path.parent)
    load_model(module, str(path / "model.safetensors"))
    opt = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
    optimizer.load_state_dict(opt["optimizer"])
    scheduler.load_state_dict(opt["scheduler"])
    rng = load_file(str(path / "rng.safetensors"))
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])
    return int(state["step"]), list(state.get("losses", []))


def train_loop(module: nn.Module, param_groups: list[dict], examples: Sequence[E], loss_fn: LossFn,
               config: TrainConfig, out_dir: Path, device: torch.device, dtype: torch.dtype | None,
               progress: bool = False, stage: str = "train") -> TrainResult:
    """Run (or resume) the optimisation; ``loss_fn(batch)`` returns ``{"loss": ..., other terms}``."""
    if not examples:
        raise MissingPrerequisiteError(f"{stage}: no training examples; check the input files")
    started = time.perf_counter()
    per_epoch, total = schedule_steps(len(examples), config)
    optimizer = torch.optim.AdamW(param_groups, lr=config.lr, weight_decay=config.weight_decay)
    warmup = int(total * config.warmup_ratio)

    def lr_lambda(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    cfg_hash = config_hash(config.to_dict())
    ckpt_root = out_dir / "checkpoints"
    start, losses = 0, []
    latest = _latest_checkpoint(ckpt_root)
    if latest is not None:
        start, losses = _load_checkpoint(latest, module, optimizer, scheduler, cfg_hash)
        logger.info("%s: resuming from %s (step %d of %d)", stage, latest, start, total)
    else:
        torch.manual_seed(config.seed)
    _STAGE[0] = stage
    logger.info("%s: %d examples, %d steps/epoch, %d steps total, batch %d x accum %d", stage, len(examples),
                per_epoch, total, config.batch_size, config.grad_accum)
    params = [p for g in param_groups for p in g["params"]]
    module.train()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=start, desc=stage, unit="step")
    for step in range(start, total):
        optimizer.zero_grad(set_to_none=True)
        step_loss, terms = _gradients(micro_batches(len(examples), step, config), examples, loss_fn, params, device,
                                      dtype, scaler, f"{stage}: loss at step {step + 1}")
        if scaler:
            scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        losses.append(step_loss)
        done = step + 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.4f}")
        if done % 10 == 0 or done == total or done == start + 1:
            logger.info("%s step %d/%d %s lr=%.2e", stage, done, total,
                        " ".join(f"{k}={v:.4f}" for k, v in terms.items()), scheduler.get_last_lr()[0])
        if done % config.checkpoint_every == 0 and done < total:
            with distributed.main_first() as main:  # rank 0 writes; the others wait for the file
                if main:
                    _save_checkpoint(ckpt_root, done, module, optimizer, scheduler, cfg_hash, losses)
        _after_step(done)
    if bar is not None:
        bar.close()
    module.eval()
    last = losses[-10:] or [float("nan")]
    return TrainResult(steps=total, resumed_from_step=start, final_loss=losses[-1] if losses else float("nan"),
                       mean_loss_last_10=sum(last) / len(last), wall_time_s=time.perf_counter() - started)


def _gradients(batches: list[list[int]], examples: Sequence[E], loss_fn: LossFn, params: list[nn.Parameter],
               device: torch.device, dtype: torch.dtype | None, scaler: torch.amp.GradScaler | None,
               where: str) -> tuple[float, dict[str, float]]:
    """Accumulate one optimiser step's gradients over its micro-batches; under torchrun each rank takes its slice
    of every micro-batch and the gradients are summed over the ranks. Returns (the step's loss, each loss term)."""
    step_loss = 0.0
    terms: dict[str, float] = {}
    for idx in batches:
        share = idx[distributed.rank()::distributed.world_size()]  # this rank's slice of the micro-batch
        if not share:
            continue
        with autocast(device, dtype):
            out = loss_fn([examples[i] for i in share])
        loss = out["loss"]
        if not torch.isfinite(loss):
            raise TrainingDivergedError(f"{where} is {loss.item()}; lower --lr or use fp32/bf16")
        # a mean over the share, weighted by its part of the micro-batch: summed over the ranks, the gradient is
        # the one process's mean over the whole micro-batch
        weight = len(share) / len(idx) / len(batches)
        scaled = loss * weight
        (scaler.scale(scaled) if scaler else scaled).backward()
        step_loss += float(scaled.detach())
        for k, v in out.items():
            terms[k] = terms.get(k, 0.0) + float(v.detach()) * weight
    distributed.all_reduce_grads(params)
    return distributed.all_reduce_sum(step_loss), {k: distributed.all_reduce_sum(v) for k, v in terms.items()}


def remove_checkpoints(out_dir: Path) -> None:
    shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
