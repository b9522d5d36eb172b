"""The real proof that serving needs no torch: ``pip install "distilrank[serve]"`` (not editable, from a copy of
this checkout) into a fresh virtualenv, then ``distilrank serve`` from that venv answers /v1/rerank.

Slow (a venv and a pip install: about a minute with a warm pip cache). Skipped, with pip's reason, only when
pip cannot reach the package index; any other install failure fails the test.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]
#: what pip prints when it cannot talk to the index at all (as opposed to a bad requirement)
_UNREACHABLE = ("Failed to establish a new connection", "Temporary failure in name resolution",
                "Name or service not known", "Network is unreachable", "ConnectTimeoutError", "ProxyError",
                "Connection refused", "Could not fetch URL", "Max retries exceeded")
_IGNORE = shutil.ignore_patterns(".git", "build", "dist", "runs", "out", "*.egg-info", "__pycache__", ".venv",
                                 ".pytest_cache", ".ruff_cache", "target", "tests", "bench")


def _clean_env() -> dict[str, str]:
    """The venv's own interpreter, nothing from this checkout or the outer environment on its path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    return {**env, "HF_HUB_OFFLINE": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


@pytest.fixture(scope="module")
def serve_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with ``distilrank[serve]`` installed; returns its ``bin`` folder."""
    root = tmp_path_factory.mktemp("serve_venv")
    src = root / "src"
    shutil.copytree(REPO, src, ignore=_IGNORE)  # a copy: pip's in-tree build must not write into the checkout
    venv = root / "venv"
    # no pip inside the venv: this environment's pip installs into it (``--python``, pip >= 22.3), which saves
    # seeding a pip into the venv; --no-compile skips byte-compiling every installed module (only the few a
    # test imports get compiled, on import). Together they halve the fixture's CPU time.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    cmd = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--no-compile",
           "--retries", "2", "--timeout", "30", f"{src}[serve]"]
    out = subprocess.run(cmd, cwd=root, env=_clean_env(), capture_output=True, text=True, timeout=1500)
    log = out.stdout + out.stderr
    if out.returncode != 0:
        reason = next((line.strip() for line in log.splitlines() if any(m in line for m in _UNREACHABLE)), None)
        if reason is not None:
            pytest.skip(f"pip cannot reach the package index (exit {out.returncode}): {reason[:300]}")
        pytest.fail(f"pip install '.[serve]' failed (exit {out.returncode}):\n{log[-4000:]}")
    return venv / "bin"


def _run(py: Path, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(py), "-c", code], cwd=py.parent, env=_clean_env(), capture_output=True, text=True,
                          timeout=120)


def test_serve_venv_has_no_training_stack(serve_venv: Path) -> None:
    py = serve_venv / "python"
    for module in ("torch", "transformers", "optimum", "sentence_transformers", "locust", "opensearchpy",
                   "matplotlib"):
        out = _run(py, f"import {module}")
        assert out.returncode != 0 and f"No module named '{module}'" in out.stderr, (module, out.stderr[-500:])
    where = _run(py, "import distill, ranker; print(ranker.__file__)")
    assert where.returncode == 0, where.stderr
    assert "site-packages" in where.stdout and str(REPO) not in where.stdout  # the installed copy, not this tree


def test_what_needs_another_extra_exits_3_naming_it(serve_venv: Path, tmp_path: Path) -> None:
    """Really missing modules (no simulation): the plot needs [plot], the student API needs [train]."""
    qrels, run = tmp_path / "qrels.txt", tmp_path / "run.txt"
    qrels.write_text("q1 0 d1 1\n")
    run.write_text("q1 Q0 d1 1 2.0 t\nq1 Q0 d2 2 1.0 t\n")
    out = subprocess.run([str(serve_venv / "distilrank"), "evaluate", "--qrels", str(qrels), "--run", str(run),
                          "--plot", str(tmp_path / "p.png")], env=_clean_env(), capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 3 and "pip install 'distilrank[plot]'" in out.stderr, out.stderr[-2000:]
    assert "ndcg@10" in out.stdout  # the metrics themselves need only the core install
    out = _run(serve_venv / "python", "import distill.student; distill.student.margin_mse")
    assert out.returncode != 0 and "pip install 'distilrank[train]'" in out.stderr, out.stderr[-2000:]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def test_serve_from_the_serve_only_venv_reranks(serve_venv: Path, ranker_model_dir: Path, tmp_path: Path) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([str(serve_venv / "distilrank"), "serve", "--model", str(ranker_model_dir),
                                 "--port", str(port), "--threads", "1", "--no-spin"],
                                cwd=tmp_path, env=_clean_env(), stdout=fh, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while _get(f"{url}/ready") != 200:
            assert proc.poll() is None, f"serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"/ready not 200 within 120 s:\n{log.read_text()[-3000:]}"
            time.sleep(0.1)
        docs = ["a study of gene expression in mice", "stock prices fell", "gene expression profiling"]
        body = json.dumps({"query": "gene expression", "documents": docs}).encode()
        req = urllib.request.Request(f"{url}/v1/rerank", data=body, headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert resp.status == 200
            answer = json.loads(resp.read())
        results = answer["results"]
        assert sorted(r["index"] for r in results) == [0, 1, 2]
        scores = [r["relevance_score"] for r in results]
        assert all(isinstance(s, float) and 0.0 <= s <= 1.0 for s in scores)
        assert scores == sorted(scores, reverse=True)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
