"""``distilrank serve`` in a real subprocess: serves, stops cleanly on SIGTERM, refuses bad models."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx
import pytest

from tests.serve_process import free_port, wait_ready

pytestmark = pytest.mark.integration


def _serve(*args: str, env_extra: dict[str, str] | None = None) -> subprocess.Popen[str]:
    # `python -m` from the checkout, not the `distilrank` script: the script imports whatever tree was
    # installed (an editable install may point at another checkout), not the code under test
    cmd = [sys.executable, "-m", "distill.cli"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    return subprocess.Popen([*cmd, "serve", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def test_serve_subprocess_answers_and_stops_cleanly(ranker_model_dir):
    port = free_port()
    proc = _serve("--model", str(ranker_model_dir), "--port", str(port), "--threads", "1", "--max-docs", "10",
                  env_extra={"DISTILRANK_API_KEY": "k"})
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_ready(url, proc)
        except RuntimeError as exc:
            pytest.fail(f"{exc}: {proc.stdout.read() if proc.stdout else ''}")
        r = httpx.post(f"{url}/v1/rerank", json={"query": "q", "documents": ["a", "b"]}, headers={"Authorization": "Bearer k"})
        assert r.status_code == 200 and len(r.json()["results"]) == 2
        assert httpx.post(f"{url}/v1/rerank", json={"query": "q", "documents": ["a"]}).status_code == 401  # key from env
        assert httpx.get(f"{url}/info", headers={"Authorization": "Bearer k"}).json()["limits"]["max_docs"] == 10
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    # uvicorn re-raises the captured SIGTERM after a clean shutdown, so the process dies by that signal
    assert proc.returncode in (0, -signal.SIGTERM), out
    assert "Application shutdown complete" in out and "queued requests were finished" in out


def test_serve_refuses_tampered_model(tampered_model_dir):
    proc = _serve("--model", str(tampered_model_dir), "--port", str(free_port()))
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 4, out
    assert "checksum mismatch for model.onnx" in out and "re-export" in out


def test_serve_bad_config_and_missing_model(tmp_path, ranker_model_dir):
    proc = _serve("--model", str(ranker_model_dir), "--max-queue", "5", "--max-docs", "10")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "max_queue=5 < max_docs=10" in out, out
    proc = _serve("--model", str(tmp_path), "--port", str(free_port()))
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 3 and "no model_card.json" in out, out


@pytest.mark.parametrize(("args", "env", "match"), [
    ((), {"DISTILRANK_API_KEY": ""}, "DISTILRANK_API_KEY is set but empty"),
    (("--api-key", ""), {}, "--api-key is empty"),
    (("--api-key", "  "), {}, "--api-key is empty"),
])
def test_serve_refuses_an_empty_api_key(ranker_model_dir, args, env, match):
    """An empty key is a configuration error (exit 2), never a silent "auth off"."""
    proc = _serve("--model", str(ranker_model_dir), "--port", str(free_port()), *args, env_extra=env)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, out
    assert match in out, out
