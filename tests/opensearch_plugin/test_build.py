"""``build-plugin`` needs the Maven sources of a checkout; an installed package (no sources) exits 3 with advice.

No JVM is started here: these are the error paths and the source lookup, before Maven runs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from distill.cli import main
from distill.core.errors import MissingPrerequisiteError
from opensearch_plugin import _build

REPO = Path(__file__).resolve().parents[2]


def test_sources_are_found_in_the_source_checkout():
    assert _build.plugin_sources() == REPO / "opensearch_plugin" / "java"
    assert (_build.plugin_sources() / "pom.xml").is_file()


def test_installed_package_without_sources_exits_3_and_says_what_to_do(tmp_path, monkeypatch, capsys):
    site_pkg = tmp_path / "site-packages" / "opensearch_plugin"
    site_pkg.mkdir(parents=True)
    monkeypatch.setattr(_build, "_PACKAGE_DIR", site_pkg)
    with pytest.raises(MissingPrerequisiteError, match="not installed with the package"):
        _build.plugin_sources()
    assert main(["opensearch", "build-plugin"]) == 3
    err = capsys.readouterr().err
    assert "--plugin ZIP" in err and "source checkout" in err
    assert not (site_pkg / "java").exists() and not (site_pkg / "target").exists()


def test_installed_package_with_leftover_sources_does_not_build_there(tmp_path, monkeypatch):
    """An old wheel that still shipped java/ is not a checkout: Maven must not write target/ into site-packages."""
    site_pkg = tmp_path / "site-packages" / "opensearch_plugin"
    (site_pkg / "java").mkdir(parents=True)
    (site_pkg / "java" / "pom.xml").write_text("<project/>")
    monkeypatch.setattr(_build, "_PACKAGE_DIR", site_pkg)
    with pytest.raises(MissingPrerequisiteError, match="not a source checkout"):
        _build.build_plugin()
    assert not (site_pkg / "java" / "target").exists()


def test_source_option_must_be_a_maven_project(tmp_path, capsys):
    assert main(["opensearch", "build-plugin", "--source", str(tmp_path)]) == 3
    assert "has no pom.xml" in capsys.readouterr().err
