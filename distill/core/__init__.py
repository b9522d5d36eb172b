"""The base layer: what every stage imports, and nothing above it.

Errors and exit codes (``errors``), atomic writes and hashes (``atomic_io``), the one config loader
(``config``), manifests (``manifest``), lazy optional imports (``lazy``), fault points for the
kill-and-resume suite (``fault_injection``), IR file formats (``formats``), the teacher-label file
contract (``label_files``), evaluation (``evaluation``), in-process BM25 (``bm25``), per-query score
normalisation (``normalization``), the one cross-encoder scorer (``cross_encoder``), base-model
resolution (``base_models``), layer selection (``layers``), the typed model card (``model_card``) and
the bundled dataset (``datasets``).

``tests/test_layering.py`` enforces the wall: no module here imports ``distill.teacher``,
``distill.student``, the pipeline, ``export``, ``ranker``, ``opensearch_plugin`` or ``loadtests``.
Import the submodules directly (``from distill.core.formats import read_corpus``); this package
imports nothing on its own so that ``import distill.core`` stays cheap.
"""
