"""Student training step on CPU: fp32 vs bf16 autocast, and AdamW's default vs its fused update.

One step of the L6 student's shape (MiniLM-L6, a one-logit head, ``--batch`` pairs of SciFact train text cut to
192 tokens, query <= 32): forward, backward and the AdamW update, each timed. fp32 and ``torch.autocast(cpu,
bfloat16)`` steps alternate (rotating which goes first) after two warm-up steps of each, so load from other work on
a shared machine falls on both; then the optimizer step alone, default against ``fused=True``. bf16 needs native
bf16 units (AMX or AVX512-BF16) to pay.

    python -m bench train_step --rounds 6

Writes bench/results/train_step.{json,md}.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench import command, write_results
from distill.core.cross_encoder import PairEncoder, TokenCaps
from distill.core.formats import read_corpus, read_queries

logger = logging.getLogger("bench.train_step")
REPO = Path(__file__).resolve().parent.parent


def _setup(data: Path, batch_size: int) -> tuple[Any, dict[str, Any]]:
    import torch
    from transformers import AutoModelForSequenceClassification

    from distill.core.base_models import resolve_student_base

    torch.manual_seed(0)
    base = resolve_student_base("default")
    queries = list(read_queries(data / "queries.train.tsv").values())[:batch_size]
    docs = list(read_corpus(data / "corpus.jsonl").values())[:batch_size]
    enc = PairEncoder(base, TokenCaps(192, 32))
    pairs = enc.batch([q.text for q in queries], [d.full_text for d in docs])
    batch = {k: torch.from_numpy(v) for k, v in pairs.items()}
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1).train()
    return model, batch


def _step(model: Any, batch: dict[str, Any], opt: Any, bf16: bool) -> tuple[float, float, float]:
    """(forward, backward, optimizer) seconds of one step."""
    import torch

    t0 = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = model(**batch).logits.view(-1)
    loss = torch.nn.functional.mse_loss(logits.float(), torch.zeros_like(logits, dtype=torch.float32))
    t1 = time.perf_counter()
    loss.backward()
    t2 = time.perf_counter()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return t1 - t0, t2 - t1, time.perf_counter() - t2


def _optimizer_step(model: Any, batch: dict[str, Any], fused: bool, reps: int) -> float:
    """Median seconds of one AdamW update of every parameter."""
    import torch

    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=fused)
    model(**batch).logits.sum().backward()
    times = []
    for _ in range(reps + 1):
        t0 = time.perf_counter()
        opt.step()
        times.append(time.perf_counter() - t0)
    opt.zero_grad(set_to_none=True)
    return float(np.median(times[1:]))


@command(__doc__)
@click.option("--data", type=click.Path(path_type=Path), default=REPO.parent / "shared" / "data" / "beir-scifact")
@click.option("--batch", "batch_size", type=int, default=16, help="pairs per step")
@click.option("--rounds", type=int, default=6, help="timed steps of each precision")
@click.option("--out", type=click.Path(path_type=Path), default=REPO / "bench" / "results")
def main(data: Path, batch_size: int, rounds: int, out: Path) -> int:
    import torch

    from distill.core.isa import machine_isa

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    model, batch = _setup(data, batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    for bf16 in (False, True, False, True):
        _step(model, batch, opt, bf16)
    steps: dict[str, list[tuple[float, float, float]]] = {"fp32": [], "bf16 autocast": []}
    for r in range(rounds):
        for bf16 in (False, True) if r % 2 == 0 else (True, False):
            steps["bf16 autocast" if bf16 else "fp32"].append(_step(model, batch, opt, bf16))
    rows = []
    for name, times in steps.items():
        a = np.asarray(times)
        rows.append({"precision": name, "step_s": float(np.median(a.sum(axis=1))),
                     "forward_s": float(np.median(a[:, 0])), "backward_s": float(np.median(a[:, 1])),
                     "optimizer_s": float(np.median(a[:, 2])), "n": len(a)})
    optim = {"adamw_default_s": _optimizer_step(model, batch, False, 3),
             "adamw_fused_s": _optimizer_step(model, batch, True, 3)}
    meta = {"batch": list(batch["input_ids"].shape), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "machine": machine_isa().to_dict(), "parameters": sum(p.numel() for p in model.parameters())}
    md = _markdown(rows, optim, meta)
    write_results(out / "train_step", {"meta": meta, "rows": rows, "optimizer": optim}, md)
    print(md)
    return 0


def _markdown(rows: list[dict[str, Any]], optim: dict[str, float], meta: dict[str, Any]) -> str:
    lines = [f"# Training step on CPU (batch {meta['batch'][0]} x {meta['batch'][1]} tokens, "
             f"{meta['threads']} threads, torch {meta['torch']}; machine {meta['machine']})\n",
             "| precision | step s (median) | forward s | backward s | optimizer s | steps |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['precision']} | {r['step_s']:.2f} | {r['forward_s']:.2f} | {r['backward_s']:.2f} | "
                     f"{r['optimizer_s']:.3f} | {r['n']} |")
    lines.append(f"\nAdamW update of {meta['parameters']:,} parameters: default {optim['adamw_default_s']:.3f} s, "
                 f"fused {optim['adamw_fused_s']:.3f} s.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    from bench import run

    run(main)
