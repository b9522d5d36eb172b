"""Data-parallel training under ``torchrun`` (or ``accelerate launch``): one process per device.

Student: the HF Trainer does the data parallelism (a DistributedSampler, gradients all-reduced each step) once
the process group exists. Teacher (CPT, SFT): the training loop splits every micro-batch across the ranks and
sums their gradients (:func:`all_reduce_grads`), so the update equals one process's on the same global batch.
What distilrank adds on top is that only **rank 0 writes**: checkpoints, the dev history, the model directory,
reports and manifests. Every rank computes the same dev evaluation (the weights are identical after each step),
so every rank keeps the same checkpoint. Checkpoints resume with the same world size.

``torchrun --nproc_per_node 2 -m distill.cli student train ...``: ``gloo`` on CPU, ``nccl`` on CUDA. With
``--nproc_per_node N`` the global batch is ``N x batch_size``; divide ``batch_size`` by N to keep a
single-process run's global batch.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["all_reduce_grads", "all_reduce_sum", "barrier", "init", "is_main", "main_first", "rank", "world_size"]


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    """Rank 0 (or no launcher): the one process that writes files."""
    return rank() == 0


def init() -> None:
    """Create the process group when launched with several processes (idempotent)."""
    if world_size() <= 1:
        return
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def barrier() -> None:
    if world_size() > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()


@contextmanager
def main_first() -> Iterator[bool]:
    """Rank 0 runs the block first (and writes); the others enter after it finished. Yields ``is_main()``."""
    if not is_main():
        barrier()
    try:
        yield is_main()
    finally:
        if is_main():
            barrier()


def all_reduce_grads(params: list[Any]) -> None:
    """Sum every parameter's gradient over the ranks (each rank scaled its share of the batch already)."""
    if world_size() <= 1:
        return
    import torch
    import torch.distributed as dist

    for p in params:
        if p.grad is None:  # a rank with no share of this step's examples still takes part in the sum
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)


def all_reduce_sum(value: float) -> float:
    """A float summed over the ranks (a logged loss)."""
    if world_size() <= 1:
        return value
    import torch
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item())
