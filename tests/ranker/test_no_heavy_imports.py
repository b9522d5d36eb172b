"""Serving is torch-free: the ranker and the CLI path of ``distilrank serve`` import nothing from the
training, export, OpenSearch or load-test extras (checked in a fresh interpreter, so what other tests
imported does not count). The install-level proof, a ``[serve]``-only virtualenv: test_serve_install.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

#: top-level modules of dependencies that are neither core nor [serve] (pyproject.toml)
FORBIDDEN = ("torch", "transformers", "sentence_transformers", "accelerate", "safetensors", "gguf", "peft",
             "optimum", "onnx", "matplotlib", "locust", "opensearchpy")


def _imported_after(code: str) -> dict[str, object]:
    """Run ``code`` in a fresh interpreter on this checkout; return which forbidden modules it left loaded."""
    script = textwrap.dedent(code) + textwrap.dedent(f"""
        import json, sys
        import distill
        print(json.dumps({{"loaded": sorted(set({FORBIDDEN!r}) & set(sys.modules)), "distill": distill.__file__}}))
        """)
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert Path(result["distill"]).resolve().is_relative_to(REPO), result  # this checkout, not another install
    return result


def test_ranker_modules_import_no_heavy_dependency() -> None:
    result = _imported_after("""
        import importlib, pkgutil
        import ranker
        for info in pkgutil.walk_packages(ranker.__path__, "ranker."):
            importlib.import_module(info.name)
        import ranker.cli, ranker.runtime, ranker.server, distill.cli
        # what RerankRuntime.load imports on use
        import onnxruntime, tokenizers
        import distill.core.cross_encoder, distill.core.model_card
        """)
    assert result["loaded"] == []


def test_serve_command_loading_imports_no_heavy_dependency() -> None:
    """The CLI path: the group resolves ``serve`` lazily, ``serve --help`` and the top-level help (which loads
    every command module) stay light, and so do the imports the serve command runs first."""
    result = _imported_after("""
        import click
        from distill.cli import cli, main
        assert cli.get_command(click.Context(cli), "serve") is not None
        for argv in (["serve", "--help"], ["--help"]):
            assert main(argv) == 0
        from ranker.runtime import RerankRuntime, RuntimeConfig
        from ranker.server import ServerConfig, create_app, make_server
        """)
    assert result["loaded"] == []
