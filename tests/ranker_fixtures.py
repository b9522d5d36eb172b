"""Fixtures for the ranker tests: an exported tiny cross-encoder dir and a real server on 127.0.0.1.

Registered once for the whole session by ``pytest_plugins`` in conftest.py (so the tiny model is exported
once); test modules import only its helpers (``SlowRuntime``, ``running_server``, ...). Starting
``distilrank serve`` as a subprocess: :mod:`ranker.process`.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest


def export_onnx_dir(hf_dir: Path, out: Path, max_seq_len: int = 128, token_caps: object = None) -> Path:
    """Export an HF cross-encoder dir the way ``distilrank export`` lays it out (ONNX + tokenizer + card)."""
    from optimum.onnxruntime import ORTModelForSequenceClassification
    from transformers import AutoTokenizer

    from distill.core.cross_encoder import TokenCaps
    from distill.core.model_card import ModelCard, write_model_card

    ORTModelForSequenceClassification.from_pretrained(hf_dir, export=True).save_pretrained(out)
    AutoTokenizer.from_pretrained(hf_dir).save_pretrained(out)
    caps = token_caps if isinstance(token_caps, TokenCaps) else TokenCaps(max_seq_len, max_query_tokens=None)
    write_model_card(out, ModelCard(name="tiny-ce", onnx_file="model.onnx", precision="fp32", token_caps=caps,
                                    decision="test fixture"))
    return out


@pytest.fixture(scope="session")
def ranker_hf_dir(tiny_cross_encoder_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random BERT with its classifier scaled up, so scores of different documents differ by far
    more than float noise (a mixed-up result would be visible)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    hf = tmp_path_factory.mktemp("tiny_ce_scaled")
    model = AutoModelForSequenceClassification.from_pretrained(tiny_cross_encoder_dir).eval()
    with torch.no_grad():
        model.classifier.weight.mul_(200.0)
    model.save_pretrained(hf)
    AutoTokenizer.from_pretrained(tiny_cross_encoder_dir).save_pretrained(hf)
    return hf


@pytest.fixture(scope="session")
def ranker_model_dir(ranker_hf_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """:func:`ranker_hf_dir` exported to ONNX with tokenizer and model card (the export layout)."""
    return export_onnx_dir(ranker_hf_dir, tmp_path_factory.mktemp("tiny_onnx"))


@pytest.fixture()
def tampered_model_dir(ranker_model_dir: Path, tmp_path: Path) -> Path:
    out = tmp_path / "tampered"
    shutil.copytree(ranker_model_dir, out)
    with open(out / "model.onnx", "ab") as fh:
        fh.write(b"\0")
    return out


@pytest.fixture(scope="session")
def ranker_runtime(ranker_model_dir: Path):
    from ranker.runtime import RerankRuntime, RuntimeConfig

    rt = RerankRuntime.load(ranker_model_dir, RuntimeConfig(threads=1, pairs_per_call=4))
    rt.warmup()
    return rt


class SlowRuntime:
    """The real runtime plus a fixed delay per call, so overload and deadlines are reproducible."""

    def __init__(self, inner, delay_s: float):
        self.inner = inner
        self.delay_s = delay_s
        self.calls: list[int] = []

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def score_pairs(self, queries: Sequence[str], docs: Sequence[str]) -> np.ndarray:
        self.calls.append(len(docs))
        time.sleep(self.delay_s)
        return self.inner.score_pairs(queries, docs)


@contextmanager
def running_server(app) -> Iterator[str]:
    """Run ``app`` under the real uvicorn server of ``distilrank serve`` (:func:`ranker.server.make_server`:
    header timeout, draining) in a thread on a free 127.0.0.1 port; yield its base URL."""
    from ranker.process import free_port, wait_ready
    from ranker.server import make_server

    port = free_port()
    server = make_server(app, port=port, log_level="warning")
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, timeout=30)
    except RuntimeError:
        server.should_exit = True
        raise
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def _send_until_answered(sock, parts: Sequence[bytes | float]) -> None:
    """Send ``parts`` (a float pauses that many seconds) in 64 KiB pieces, stopping as soon as the server has
    answered (or closed): a client that kept writing into a closed connection would get a reset, not the answer."""
    import select

    for part in parts:
        if isinstance(part, float):
            if select.select([sock], [], [], part)[0]:
                return
            continue
        for start in range(0, len(part), 65536):
            if select.select([sock], [], [], 0)[0]:
                return
            try:
                sock.sendall(part[start:start + 65536])
            except OSError:  # the server answered early and closed: read what it said
                return


def raw_exchange(url: str, parts: Sequence[bytes | float],
                 timeout: float = 15.0) -> tuple[int, dict[str, str], bytes, float]:
    """Send ``parts`` on a fresh TCP connection to ``url`` (bytes are sent, a float pauses that many seconds), then
    read one response. Returns ``(status, headers, body, seconds from first byte sent to response read)``; status 0
    when the server closed without answering. Sending stops as soon as the server answered or closed."""
    import socket
    from urllib.parse import urlsplit

    u = urlsplit(url)
    with socket.create_connection((u.hostname, u.port), timeout=timeout) as sock:
        t0 = time.monotonic()
        _send_until_answered(sock, parts)
        data = b""
        while True:
            head, sep, rest = data.partition(b"\r\n\r\n")
            if sep:
                lines = head.decode("latin-1").split("\r\n")
                headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
                if "content-length" in headers and len(rest) >= int(headers["content-length"]):
                    length = int(headers["content-length"])
                    return int(lines[0].split()[1]), headers, rest[:length], time.monotonic() - t0
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                chunk = b""
            if not chunk:
                if sep:
                    return int(lines[0].split()[1]), headers, rest, time.monotonic() - t0
                return 0, {}, data, time.monotonic() - t0
            data += chunk


def http_request(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
                 content_length: int | None = None) -> bytes:
    """Raw HTTP/1.1 request bytes; ``content_length`` overrides the real length (None: len(body); -1: no header)."""
    hdrs = {"Host": "127.0.0.1", "Content-Type": "application/json", **(headers or {})}
    length = len(body) if content_length is None else content_length
    if length >= 0 and "Transfer-Encoding" not in hdrs:
        hdrs["Content-Length"] = str(length)
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
    return head.encode("latin-1") + body


def metric_value(text: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample in ``/metrics`` text (0.0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    key = f"{name}{{{want}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(key + " "):
            return float(line.split()[-1])
    return 0.0
