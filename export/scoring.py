"""Score (query, passage) pairs with an ONNX cross-encoder or its PyTorch original.

Scores are raw logits of a 1-label cross-encoder (higher = more relevant). Pairs are truncated on
the passage side to ``max_seq_len`` tokens. ``bucketed=True`` sorts pairs by token length before
cutting them into batches, so each batch is padded only to its own longest pair; results are always
returned in input order.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["OnnxScorer", "Pair", "TorchScorer", "batch_order"]

logger = logging.getLogger(__name__)

Pair = tuple[str, str]


def batch_order(lengths: Sequence[int], batch_size: int, bucketed: bool) -> list[list[int]]:
    """Indices of each batch: input order, or sorted by length (longest first) when ``bucketed``."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i]) if bucketed else list(range(len(lengths)))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


class _Tokenized:
    def __init__(self, tokenizer_dir: str | os.PathLike[str], max_seq_len: int):
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
        self.max_seq_len = max_seq_len

    def encode(self, pairs: Sequence[Pair]) -> dict[str, np.ndarray]:
        enc = self.tokenizer([q for q, _ in pairs], [p for _, p in pairs], truncation="only_second",
                             max_length=self.max_seq_len, padding=True, return_tensors="np")
        return {k: v.astype(np.int64) for k, v in enc.items()}

    def lengths(self, pairs: Sequence[Pair]) -> list[int]:
        enc = self.tokenizer([q for q, _ in pairs], [p for _, p in pairs], truncation="only_second",
                             max_length=self.max_seq_len)
        return [len(ids) for ids in enc["input_ids"]]

    def score(self, pairs: Sequence[Pair], batch_size: int, bucketed: bool) -> np.ndarray:
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        lengths = self.lengths(pairs) if bucketed else [0] * len(pairs)
        out = np.empty(len(pairs), dtype=np.float32)
        for idx in batch_order(lengths, batch_size, bucketed):
            out[idx] = self._run(self.encode([pairs[i] for i in idx]))
        return out

    def _run(self, batch: dict[str, np.ndarray]) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


class OnnxScorer(_Tokenized):
    """onnxruntime session over one ``.onnx`` file; the tokenizer is read from ``tokenizer_dir``."""

    def __init__(self, onnx_path: str | os.PathLike[str], tokenizer_dir: str | os.PathLike[str], max_seq_len: int = 256,
                 intra_op_threads: int = 0):
        import onnxruntime as ort

        super().__init__(tokenizer_dir, max_seq_len)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = intra_op_threads
        self.path = Path(onnx_path)
        self.session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]

    def _run(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        feed = {name: batch[name] for name in self.input_names}
        logits = self.session.run(None, feed)[0]
        return np.asarray(logits, dtype=np.float32).reshape(len(batch["input_ids"]), -1)[:, 0]


class TorchScorer(_Tokenized):
    """The PyTorch student (an HF ``*ForSequenceClassification`` dir with one label)."""

    def __init__(self, model_dir: str | os.PathLike[str], max_seq_len: int = 256):
        import torch
        from transformers import AutoModelForSequenceClassification

        super().__init__(model_dir, max_seq_len)
        self._torch = torch
        self.model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), dtype=torch.float32).eval()

    def _run(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            logits = self.model(**{k: torch.from_numpy(v) for k, v in batch.items()}).logits
        return logits[:, 0].float().numpy()
