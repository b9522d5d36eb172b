"""Build the plugin zip with Maven (``mvn -q -f opensearch_plugin/java/pom.xml package``) from a source checkout.

The Maven project (``java/``) is kept in the repository but is not package data: an installed ``distilrank``
has no Java sources, so it installs a zip built elsewhere (``distilrank opensearch install --plugin ZIP``).
Building is refused outside a source checkout, which also keeps Maven's ``target/`` out of site-packages.
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

from distill.core.errors import MissingPrerequisiteError

from ._node import OPENSEARCH_VERSION, _mvn, find_java_home

logger = logging.getLogger(__name__)

_PACKAGE_DIR = Path(__file__).resolve().parent


def plugin_sources(source: Path | None = None) -> Path:
    """The plugin's Maven project: ``source`` if given, else ``opensearch_plugin/java`` of the source checkout
    this package was imported from (a checkout has ``pyproject.toml`` next to the package).

    Raises MissingPrerequisiteError (exit code 3) when there is no ``pom.xml`` there, e.g. in an installed package.
    """
    if source is not None:
        java = Path(source).resolve()
        if not (java / "pom.xml").is_file():
            raise MissingPrerequisiteError(f"{java} has no pom.xml: give the plugin's Maven project "
                                           f"(opensearch_plugin/java in a distilrank checkout)")
        return java
    java = _PACKAGE_DIR / "java"
    if (java / "pom.xml").is_file() and (_PACKAGE_DIR.parent / "pyproject.toml").is_file():
        return java
    raise MissingPrerequisiteError(
        f"the plugin's Java sources are not installed with the package ({_PACKAGE_DIR} is not a source checkout). "
        f"Build the zip from a distilrank checkout (`distilrank opensearch build-plugin` there, or `--source "
        f"CHECKOUT/opensearch_plugin/java`), then install it with `distilrank opensearch install --plugin ZIP`.")


def build_plugin(version: str = OPENSEARCH_VERSION, source: Path | None = None) -> Path:
    """Compile and package the rescorer plugin for OpenSearch ``version``; returns the zip's path
    (under the Maven project's ``target/``). ``source``: see :func:`plugin_sources`."""
    java = plugin_sources(source)
    env = dict(os.environ, JAVA_HOME=str(find_java_home()))
    cmd = [_mvn(), "-q", "-B", "-f", str(java / "pom.xml"), f"-Dopensearch.version={version}", "package"]
    logger.info("building plugin: %s", " ".join(cmd))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    zips = sorted((java / "target").glob("distilrank-opensearch-*.zip"))
    if proc.returncode != 0 or not zips:
        raise MissingPrerequisiteError(f"plugin build failed:\n{proc.stdout[-4000:]}{proc.stderr[-4000:]}")
    return zips[-1]
