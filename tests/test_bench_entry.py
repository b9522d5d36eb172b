"""Every bench script ends through :func:`bench.run`: a missing collection is one error line and exit 4."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from bench import run
from distill.core.errors import ConfigError, DataError

BENCH = Path(__file__).resolve().parent.parent / "bench"


def test_run_turns_distilrank_errors_into_exit_codes(capsys):
    def missing() -> int:
        raise DataError("file not found", path="/nowhere/corpus.jsonl")

    with pytest.raises(SystemExit) as exc:
        run(missing)
    assert exc.value.code == 4
    assert capsys.readouterr().err.strip() == "error: /nowhere/corpus.jsonl: file not found"
    with pytest.raises(SystemExit) as exc:
        run(lambda: (_ for _ in ()).throw(ConfigError("bad flag")))
    assert exc.value.code == 2
    for rc, code in ((None, 0), (0, 0), (3, 3)):
        with pytest.raises(SystemExit) as exc:
            run(lambda rc=rc: rc)
        assert exc.value.code == code
    with pytest.raises(RuntimeError):  # a bug stays a traceback
        run(lambda: (_ for _ in ()).throw(RuntimeError("bug")))


@pytest.mark.parametrize("script", sorted(p.name for p in BENCH.glob("*.py") if p.name != "__init__.py"))
def test_every_bench_script_ends_through_run(script):
    tree = ast.parse((BENCH / script).read_text())
    main_block = [n for n in tree.body if isinstance(n, ast.If) and "__main__" in ast.unparse(n.test)]
    assert main_block and "run(" in ast.unparse(main_block[0]), f"bench/{script}: end with bench.run(main)"


def test_a_bench_on_a_missing_collection_says_so_without_a_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bench.dense_ft", "--data", str(tmp_path / "none"), "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, cwd=BENCH.parent, timeout=300)
    assert proc.returncode == 4, proc.stderr
    assert proc.stderr.strip().endswith(f"error: {tmp_path / 'none' / 'corpus.jsonl'}: file not found")
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()  # nothing written
