"""The benches as one tool: ``python -m bench NAME`` runs any of them, each is one click command ending through
:func:`bench.run` (a missing collection is one error line and exit 4), none imports ``tests``, and every result
file starts with the run header. No bench runs for real here: only ``--help`` and error paths."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import click
import pytest

from bench import command, run, run_header, write_results
from distill.core.errors import ConfigError, DataError

BENCH = Path(__file__).resolve().parent.parent / "bench"
#: every bench module: what ``python -m bench`` must list (private helpers and the dispatcher are not benches)
BENCHES = sorted(p.stem for p in BENCH.glob("*.py") if not p.stem.startswith("_"))


def _tree(name: str) -> ast.Module:
    return ast.parse((BENCH / f"{name}.py").read_text(encoding="utf-8"))


def _bench(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=BENCH.parent,
                          timeout=timeout)


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


def test_run_gives_a_click_commands_return_value_and_usage_errors_as_exit_codes(capsys):
    @command("A bench.")
    @click.option("--rc", type=int, default=0)
    def main(rc: int) -> int:
        if rc < 0:
            raise DataError("bad run file", path="/x/run.trec")
        return rc

    for args, code in ((["--rc", "1"], 1), ([], 0), (["--help"], 0), (["--nope"], 2), (["--rc", "-1"], 4)):
        with pytest.raises(SystemExit) as exc:
            run(main, args)
        assert exc.value.code == code, args
    err = capsys.readouterr().err
    assert "No such option '--nope'" in err and "error: /x/run.trec: bad run file" in err


@pytest.mark.parametrize("name", BENCHES)
def test_every_bench_is_one_click_command_ending_through_run(name):
    tree = _tree(name)
    main_block = [n for n in tree.body if isinstance(n, ast.If) and "__main__" in ast.unparse(n.test)]
    assert main_block and "run(main)" in ast.unparse(main_block[0]), f"bench/{name}.py: end with bench.run(main)"
    mains = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main"]
    assert mains and any(ast.unparse(d) == "command(__doc__)" for d in mains[0].decorator_list), \
        f"bench/{name}.py: declare main with @bench.command(__doc__) and click options"
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert "argparse" not in imported, f"bench/{name}.py: one CLI library (click), not argparse"


@pytest.mark.parametrize("name", BENCHES)
def test_no_bench_imports_the_tests(name):
    found = [a.name for n in ast.walk(_tree(name)) if isinstance(n, ast.Import) for a in n.names]
    found += [n.module or "" for n in ast.walk(_tree(name)) if isinstance(n, ast.ImportFrom) and not n.level]
    assert not [m for m in found if m == "tests" or m.startswith("tests.")], \
        f"bench/{name}.py imports from tests/: use the library (e.g. ranker.process)"


def test_python_m_bench_lists_every_bench_with_one_line():
    proc = _bench("bench", "--help", timeout=120)
    assert proc.returncode == 0, proc.stderr
    listing = proc.stdout.split("Benches:", 1)[1]
    for name in BENCHES:
        assert f"\n  {name} " in listing, f"{name} missing from `python -m bench --help`:\n{proc.stdout}"
    unknown = _bench("bench", "no_such_bench", timeout=120)
    assert unknown.returncode == 2 and "No such command" in unknown.stderr


@pytest.mark.parametrize("name", BENCHES)
def test_every_bench_has_a_one_line_summary(name):
    summary = (ast.get_docstring(_tree(name)) or "").split("\n", 1)[0]
    assert summary.endswith(".") and len(summary) <= 96, \
        f"bench/{name}.py: the docstring's first line is the one-line summary `python -m bench --help` lists"


@pytest.mark.parametrize("entry", [("bench", "dense_ft"), ("bench.dense_ft",)], ids=["bench NAME", "bench.NAME"])
def test_a_bench_on_a_missing_collection_says_so_without_a_traceback(tmp_path, entry):
    proc = _bench(*entry, "--data", str(tmp_path / "none"), "--out", str(tmp_path / "out"))
    assert proc.returncode == 4, proc.stderr
    assert proc.stderr.strip().endswith(f"error: {tmp_path / 'none' / 'corpus.jsonl'}: file not found")
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()  # nothing written


def test_a_bench_help_keeps_its_docstring_layout():
    proc = _bench("bench", "dense_ft", "--help", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Usage: python -m bench dense_ft [OPTIONS]")
    assert "\n      python -m bench dense_ft\n" in proc.stdout  # the example stays on its own indented line
    assert "--dev INTEGER" in proc.stdout and "[default: 150]" in proc.stdout


def test_every_result_file_starts_with_the_run_header(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", [str(BENCH / "__main__.py"), "speed", "--caps", "32:160", "--out", "a b"])
    run_header.cache_clear()
    try:
        header = run_header()
        path = write_results(tmp_path / "sub" / "x", {"rows": [1], "b": {"z": 1, "a": 2}}, "# Title\n\n| a |\n")
    finally:
        run_header.cache_clear()
    assert header.command == "python -m bench speed --caps 32:160 --out 'a b'"
    assert len(header.commit) == 40 or header.commit == "unknown"
    assert header.date.endswith("Z") and "cores" in header.machine
    text = path.read_text(encoding="utf-8")
    data = json.loads(text)
    assert list(data) == ["header", "b", "rows"] and list(data["b"]) == ["a", "z"]
    assert data["header"] == header.to_dict()
    md = (tmp_path / "sub" / "x.md").read_text(encoding="utf-8").splitlines()
    assert md[0] == "# Title" and md[1] == "" and md[2] == header.markdown() and md[4] == "| a |"
    assert f"`{header.command}`" in md[2] and header.commit[:12] in md[2]
