"""``distilrank serve`` in a real subprocess: serves, stops cleanly on SIGTERM, refuses bad models."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys

import httpx
import pytest

from ranker.process import free_port, wait_ready

pytestmark = pytest.mark.integration


def _serve(*args: str, env_extra: dict[str, str] | None = None) -> subprocess.Popen[str]:
    # `python -m` from the checkout, not the `distilrank` script: the script imports whatever tree was
    # installed (an editable install may point at another checkout), not the code under test
    cmd = [sys.executable, "-m", "distill.cli"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    return subprocess.Popen([*cmd, "serve", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)


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
        r = httpx.post(f"{url}/v1/rerank", json={"query": "q", "documents": ["a", "b"]},
                       headers={"Authorization": "Bearer k"})
        assert r.status_code == 200 and len(r.json()["results"]) == 2
        # the key came from the environment
        assert httpx.post(f"{url}/v1/rerank", json={"query": "q", "documents": ["a"]}).status_code == 401
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


@pytest.mark.parametrize("args", [
    ("--max-wait-ms", "nan"), ("--max-wait-ms", "inf"), ("--max-wait-ms", "1e999"), ("--default-deadline-ms", "nan"),
    ("--header-timeout", "inf"), ("--body-timeout", "nan"), ("--graceful-timeout", "-inf"), ("--max-docs", "nan"),
    ("--max-batch-tokens", "inf"), ("--cache-size", "\uff11\uff10"), ("--max-queue", "1e3"), ("--threads", "nan"),
], ids=lambda a: " ".join(a) if isinstance(a, tuple) else a)
def test_serve_refuses_non_finite_durations_and_counts(ranker_model_dir, args):
    """Every duration and count is finite and in range at start (exit 2), before the model loads: a wait of
    nan ms would leave every request without a deadline hanging."""
    proc = _serve("--model", str(ranker_model_dir), "--port", str(free_port()), *args)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, out
    assert f"Invalid value for '{args[0]}'" in out, out
    assert "ranker ready" not in out and "loaded" not in out


@pytest.mark.parametrize(("key", "match"), [
    (" padded", "spaces before or after"), ("padded ", "spaces before or after"),
    ("\u043a\u043b\u044e\u0447", r"U\+043A, which is above U\+00FF"), ("tab\tkey", r"U\+0009, which is a control"),
])
def test_serve_refuses_an_api_key_no_request_could_match(ranker_model_dir, key, match):
    proc = _serve("--model", str(ranker_model_dir), "--port", str(free_port()), "--api-key", key)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, out
    assert re.search(match, out), out


def test_serve_port_in_use_exits_before_ready(ranker_model_dir):
    """The port is taken before the model loads: exit 3 at once, never after "ranker ready" was logged."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = _serve("--model", str(ranker_model_dir), "--port", str(port))
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 3, out
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use; stop the other server" in out, out
    assert "ranker ready" not in out and "loaded" not in out


@pytest.mark.parametrize(("build", "match"), [
    ("wrong_inputs_model", "not a cross-encoder the ranker can serve: unknown input 'pixel_values'"),
    ("two_logits_model", r"output 'logits' is tensor\(float\) \[batch, 2\]"),
    ("nan_model", r"the model produced NaN or infinity for 2 of 2 pair\(s\) at warm-up"),
])
def test_serve_refuses_a_broken_export(ranker_model_dir, tmp_path, build, match):
    """Exit 4 naming the ONNX file, no traceback, no "ranker ready"."""
    from tests.ranker import onnx_stubs

    if build == "nan_model":
        out_dir = onnx_stubs.nan_on_token_model(tmp_path / build, ranker_model_dir, 101)
    else:
        out_dir = getattr(onnx_stubs, build)(tmp_path / build, ranker_model_dir)
    proc = _serve("--model", str(out_dir), "--port", str(free_port()), "--threads", "1")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 4, out
    assert f"error: {out_dir / 'model.onnx'}: " in out and re.search(match, out), out
    assert "Traceback" not in out and "ranker ready" not in out
