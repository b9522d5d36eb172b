"""Build the plugin zip with Maven (``mvn -q -f opensearch_plugin/java/pom.xml package``)."""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

from distill.errors import MissingPrerequisiteError

from ._node import OPENSEARCH_VERSION, _mvn, find_java_home

logger = logging.getLogger(__name__)

JAVA_PROJECT = Path(__file__).resolve().parent / "java"


def build_plugin(version: str = OPENSEARCH_VERSION) -> Path:
    """Compile and package the rescorer plugin for OpenSearch ``version``; returns the zip's path."""
    env = dict(os.environ, JAVA_HOME=str(find_java_home()))
    cmd = [_mvn(), "-q", "-B", "-f", str(JAVA_PROJECT / "pom.xml"), f"-Dopensearch.version={version}", "package"]
    logger.info("building plugin: %s", " ".join(cmd))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    zips = sorted((JAVA_PROJECT / "target").glob("distilrank-opensearch-*.zip"))
    if proc.returncode != 0 or not zips:
        raise MissingPrerequisiteError(f"plugin build failed:\n{proc.stdout[-4000:]}{proc.stderr[-4000:]}")
    return zips[-1]
