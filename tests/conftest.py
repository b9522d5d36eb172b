"""Shared fixtures: tiny random models built offline from configs, real data paths.

Fixtures convention (one for the whole suite; ``tests`` is a package, so every module is imported as
``tests.<sub>.<name>`` and test file names only need to be unique per folder):

- fixtures every folder uses live here;
- fixtures of one area live in a ``tests/<area>_fixtures.py`` plugin module, registered once in
  ``pytest_plugins`` below (so session-scoped ones are built once); test modules may import its plain helpers;
- plain helpers (data builders) are ordinary modules imported as
  ``tests.<name>`` (``tests.teacher_data``, ``tests.student_data``); the ``distilrank serve`` process harness is
  the library's :mod:`ranker.process`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from distill.core.datasets import bundled_dataset

#: ranker fixtures (tiny exported model, servers) and OpenVINO export fixtures, registered once for the session
pytest_plugins = ["tests.ranker_fixtures", "tests.export_fixtures"]

#: ``make test`` runs one xdist worker per core. Each worker (and every pipeline or server it starts, which inherit
#: the environment) gets its share of the cores for torch's OpenMP pool: N workers each spinning an all-core pool
#: oversubscribe the machine, and the threads' busy-waiting burns CPU the other worker needs.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _WORKERS)))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("DISTILRANK_SHARED_DATA", REPO.parent / "shared" / "data"))
SCIFACT = SHARED_DATA / "beir-scifact"
DEMO_DATA = bundled_dataset().root


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``make test`` runs two xdist workers with ``--dist loadfile``: the tests that need the OpenSearch node must
    stay in one file, or two workers would install the plugin into the one cached node and restart it under each
    other."""
    files = sorted({str(item.path) for item in items if item.get_closest_marker("opensearch")})
    if len(files) > 1:
        raise pytest.UsageError(f"tests marked opensearch live in {len(files)} files ({files}); keep them in one "
                                "module (they share one node and run in one xdist worker)")


@pytest.fixture(scope="session")
def tiny_cross_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random BERT with one output logit (real all-MiniLM-L6-v2 tokenizer), loadable by CrossEncoder."""
    from distill.tiny_models import build_tiny_cross_encoder

    return build_tiny_cross_encoder(tmp_path_factory.mktemp("tiny") / "ce")


@pytest.fixture(scope="session")
def tiny_decoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random Llama-style decoder with the SmolLM2 tokenizer, saved as an HF dir."""
    from distill.tiny_models import build_tiny_decoder

    return build_tiny_decoder(tmp_path_factory.mktemp("tiny") / "decoder")


@pytest.fixture(scope="session")
def scifact() -> Path:
    if not (SCIFACT / "corpus.jsonl").exists():
        pytest.skip(f"SciFact not found at {SCIFACT} (set DISTILRANK_SHARED_DATA)")
    return SCIFACT


@pytest.fixture(scope="session")
def demo_data() -> Path:
    return DEMO_DATA
