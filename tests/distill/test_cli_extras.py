"""A command or API used without its pip extra exits 3 (MissingPrerequisiteError) and names the extra.

Missing modules are simulated with ``sys.modules[name] = None`` (Python then refuses the import with
ModuleNotFoundError), and our modules that import them are dropped from ``sys.modules`` for the test so the
import really runs again; monkeypatch puts everything back. The real install without torch is proven in
tests/ranker/test_serve_install.py.
"""

from __future__ import annotations

import sys
import textwrap
import tomllib
from pathlib import Path

import click
import pytest

from distill import cli as cli_mod
from distill.cli import COMMAND_EXTRAS, main
from distill.core.errors import MissingPrerequisiteError
from distill.core.lazy import MissingExtraError, missing_extra_error

REPO = Path(__file__).resolve().parents[2]
CORE_COMMANDS = {"retrieve", "evaluate"}
#: extra -> a module it provides, blocked to stand for "this extra is not installed"
EXTRA_MODULE = {"train": "torch", "export": "optimum", "serve": "onnxruntime", "opensearch": "opensearchpy",
                "loadtest": "locust"}


def _block(monkeypatch: pytest.MonkeyPatch, module: str, *purge: str) -> None:
    """Make ``import module`` fail, and forget the packages ``purge`` so their imports run again."""
    monkeypatch.setitem(sys.modules, module, None)
    for name in list(sys.modules):
        if any(name == p or name.startswith(p + ".") for p in purge):
            monkeypatch.delitem(sys.modules, name)


def _stub_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, command: str, body: str,
                  at_import: str = "") -> None:
    """Point ``distilrank COMMAND`` at a stub module whose command runs ``body`` (and whose import runs
    ``at_import``), so each row of the extras table is tested without the command's real arguments."""
    mod = f"_stub_{command}_{tmp_path.name}".replace("-", "_")  # unique: sys.modules keeps earlier stubs
    (tmp_path / f"{mod}.py").write_text(textwrap.dedent(f"""
        import click
        {at_import}

        @click.command("{command}")
        def cmd():
            {body}
        """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(cli_mod._LAZY_COMMANDS, command, f"{mod}:cmd")


def test_extras_table_matches_pyproject() -> None:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(COMMAND_EXTRAS) == set(cli_mod._LAZY_COMMANDS) - CORE_COMMANDS
    assert set(COMMAND_EXTRAS.values()) <= set(extras)
    assert {"train", "export", "serve", "opensearch", "loadtest", "gpu", "dev"} <= set(extras)


@pytest.mark.parametrize(("command", "extra"), sorted(COMMAND_EXTRAS.items()))
def test_missing_module_while_running_exits_3_naming_the_extra(command: str, extra: str, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    module = EXTRA_MODULE[extra]
    _block(monkeypatch, module)
    _stub_command(monkeypatch, tmp_path, command, body=f"import {module}")
    assert main([command]) == 3
    err = capsys.readouterr().err
    assert f"pip install 'distilrank[{extra}]'" in err
    assert repr(module) in err and f"distilrank {command}" in err


@pytest.mark.parametrize(("command", "extra"), sorted(COMMAND_EXTRAS.items()))
def test_missing_module_at_import_is_listed_and_exits_3(command: str, extra: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    module = EXTRA_MODULE[extra]
    _block(monkeypatch, module)
    _stub_command(monkeypatch, tmp_path, command, body="pass", at_import=f"import {module}")
    assert main(["--help"]) == 0
    listing = capsys.readouterr().out
    assert command in listing and f"not installed: pip install 'distilrank[{extra}]'" in listing
    for argv in ([command], [command, "--help"], [command, "sub", "--some-option", "x"]):
        assert main(argv) == 3, argv
        assert f"pip install 'distilrank[{extra}]'" in capsys.readouterr().err


def test_real_serve_without_fastapi_exits_3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    _block(monkeypatch, "fastapi", "ranker")
    assert main(["serve", "--model", str(tmp_path)]) == 3
    err = capsys.readouterr().err
    assert "'fastapi'" in err and "pip install 'distilrank[serve]'" in err


def test_real_loadtest_without_pydantic_exits_3(monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    _block(monkeypatch, "pydantic", "loadtests")
    assert main(["loadtest", "--help"]) == 3
    assert "pip install 'distilrank[loadtest]'" in capsys.readouterr().err


def test_evaluate_plot_without_matplotlib_exits_3_naming_plot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    qrels, run = tmp_path / "qrels.txt", tmp_path / "run.txt"
    qrels.write_text("q1 0 d1 1\n")
    run.write_text("q1 Q0 d1 1 2.0 t\nq1 Q0 d2 2 1.0 t\n")
    _block(monkeypatch, "matplotlib")
    code = main(["evaluate", "--qrels", str(qrels), "--run", str(run), "--plot", str(tmp_path / "p.png")])
    assert code == 3
    assert "pip install 'distilrank[plot]'" in capsys.readouterr().err
    assert not (tmp_path / "p.png").exists()


def test_a_missing_module_of_ours_is_a_bug_not_an_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _stub_command(monkeypatch, tmp_path, "serve", body="import distill._no_such_module")
    with pytest.raises(ModuleNotFoundError, match="distill._no_such_module"):
        main(["serve"])
    assert missing_extra_error(ModuleNotFoundError("x", name="ranker.nope"), "serve", "x") is None


def test_lazy_package_exports_name_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import distill.student

    _block(monkeypatch, "torch", "distill.student.loss")
    with pytest.raises(MissingExtraError, match=r"distill\.student\.margin_mse needs .*'torch'.*distilrank\[train\]"):
        distill.student.margin_mse  # noqa: B018 - the attribute access is the import
    # a library caller's `except ImportError` still works, and the CLI exits 3 for it
    exc = MissingExtraError("x")
    assert isinstance(exc, ImportError) and isinstance(exc, MissingPrerequisiteError)


@pytest.mark.parametrize(("load", "module", "extra"), [
    ("distill.core.cross_encoder:OnnxBackend", "onnxruntime", "serve"),
    ("distill.core.cross_encoder:TorchBackend", "torch", "train"),
])
def test_scoring_backends_name_their_extra(load: str, module: str, extra: str, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    mod, cls = load.split(":")
    backend = getattr(importlib.import_module(mod), cls)
    _block(monkeypatch, module)
    with pytest.raises(MissingExtraError, match=rf"pip install 'distilrank\[{extra}\]'") as info:
        backend.load(tmp_path / "model.onnx")
    assert info.value.name == module and isinstance(info.value, ImportError)


def test_stub_helper_really_loads_a_click_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _stub_command(monkeypatch, tmp_path, "serve", body="pass")
    assert isinstance(cli_mod.cli.get_command(click.Context(cli_mod.cli), "serve"), click.Command)
    assert main(["serve"]) == 0
