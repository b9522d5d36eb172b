"""Fetch, configure, start and stop a local single-node OpenSearch (the integ-test zip from Maven Central).

Version choice: OpenSearch 3.4.0 is the newest release we build against; 3.x needs Java 21+ and 3.4 is the
first line that runs on JDK 25 (the Temurin 25 installed here). 2.19.x would run on the system JDK 17 but
not on 24+, and 3.x is where the plugin API (secure_sm.AccessController, java agent policies) is going.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from distill.core.errors import ConfigError, MissingPrerequisiteError

logger = logging.getLogger(__name__)

OPENSEARCH_VERSION = "3.4.0"
MIN_JAVA = 21  # OpenSearch 3.x
DIST_ARTIFACT = "org.opensearch.distribution.integ-test-zip:opensearch:{version}:zip"
#: OpenSearch's own analysis module (the ``english`` analyzer and its Porter stemmer, ``stemmer``, ``stop``, ...):
#: the integ-test zip lacks it, Maven Central serves its jar, and ``install`` adds it to ``modules/``
ANALYSIS_COMMON = "analysis-common"
ANALYSIS_COMMON_ARTIFACT = "org.opensearch.plugin:analysis-common:{version}:jar"
ANALYSIS_COMMON_CLASS = "org.opensearch.analysis.common.CommonAnalysisModulePlugin"
RUN_AS_USER = "distilrank"
DEFAULT_PORT = 9200
DEFAULT_HEAP = "512m"
PLUGIN_NAME = "distilrank"


def distilrank_home() -> Path:
    """``$DISTILRANK_HOME`` or ``~/.cache/distilrank``."""
    return Path(os.environ.get("DISTILRANK_HOME") or "~/.cache/distilrank").expanduser().resolve()


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """Where and how the local node runs. ``port`` is the HTTP port on 127.0.0.1."""

    version: str = OPENSEARCH_VERSION
    root: Path | None = None  # default: distilrank_home() / "opensearch"
    port: int = DEFAULT_PORT
    heap: str = DEFAULT_HEAP

    def __post_init__(self) -> None:
        if not 1 <= self.port <= 65535:
            raise ConfigError(f"port must be in 1..65535, got {self.port}")
        if not re.fullmatch(r"\d+[mg]", self.heap):
            raise ConfigError(f"heap must look like 512m or 1g, got {self.heap!r}")

    @property
    def base(self) -> Path:
        return self.root or distilrank_home() / "opensearch"

    @property
    def install_dir(self) -> Path:
        return self.base / f"opensearch-{self.version}"

    @property
    def pid_file(self) -> Path:
        return self.install_dir / "opensearch.pid"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _java_major(java_home: Path) -> int | None:
    java = java_home / "bin" / "java"
    if not java.exists():
        return None
    out = subprocess.run([str(java), "-version"], capture_output=True, text=True).stderr
    m = re.search(r'version "(\d+)', out)
    return int(m.group(1)) if m else None


def find_java_home(min_major: int = MIN_JAVA) -> Path:
    """``$OPENSEARCH_JAVA_HOME``, else ``$JAVA_HOME``, else the newest JDK under /usr/lib/jvm with Java >= min_major."""
    for var in ("OPENSEARCH_JAVA_HOME", "JAVA_HOME"):
        if os.environ.get(var):
            home = Path(os.environ[var])
            major = _java_major(home)
            if major is not None and major >= min_major:
                return home
            logger.info("%s=%s is Java %s, OpenSearch %s needs %d+; looking elsewhere", var, home, major,
                        OPENSEARCH_VERSION, min_major)
    candidates = []
    jvm = Path("/usr/lib/jvm")
    for home in sorted(jvm.iterdir()) if jvm.is_dir() else []:
        if home.is_symlink():
            continue
        major = _java_major(home)
        if major is not None and major >= min_major:
            candidates.append((major, home))
    if not candidates:
        raise MissingPrerequisiteError(
            f"OpenSearch {OPENSEARCH_VERSION} needs a JDK {min_major}+; none found in $OPENSEARCH_JAVA_HOME, "
            f"$JAVA_HOME or /usr/lib/jvm. Install one (e.g. apt-get install openjdk-21-jdk-headless) and set "
            f"OPENSEARCH_JAVA_HOME.")
    return max(candidates)[1]


def _mvn() -> str:
    mvn = shutil.which("mvn")
    if not mvn:
        raise MissingPrerequisiteError("Maven (`mvn`) is needed to fetch OpenSearch from Maven Central: "
                                       "apt-get install maven")
    return mvn


def _maven_copy(artifact: str, dest: Path, file_name: str) -> Path:
    """``mvn dependency:copy`` of ``artifact`` (from Maven Central, through the local Maven repo) into ``dest``."""
    path = dest / file_name
    if path.exists():
        return path
    dest.mkdir(parents=True, exist_ok=True)
    logger.info("fetching %s with Maven", artifact)
    proc = subprocess.run([_mvn(), "-q", "-B", "dependency:copy", f"-Dartifact={artifact}",
                           f"-DoutputDirectory={dest}"], capture_output=True, text=True)
    if proc.returncode != 0 or not path.exists():
        raise MissingPrerequisiteError(f"mvn dependency:copy of {artifact} failed (is Maven Central reachable?):\n"
                                       f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return path


def fetch_distribution(cfg: NodeConfig) -> Path:
    """Copy the distribution zip from Maven Central (through the local Maven repo) into ``base/downloads``."""
    return _maven_copy(DIST_ARTIFACT.format(version=cfg.version), cfg.base / "downloads",
                       f"opensearch-{cfg.version}.zip")


def install_analysis_common(cfg: NodeConfig) -> Path:
    """Add OpenSearch's ``analysis-common`` module (the ``english`` analyzer) to the node; idempotent.

    Maven Central serves the module's jar without the descriptor the distribution builds around it, so the
    descriptor is written here. Its Painless extension is left out (``extended.plugins`` is empty: the
    integ-test zip has no Painless); it only serves analysis scripts, which nothing here uses. Returns the
    module directory.
    """
    module = cfg.install_dir / "modules" / ANALYSIS_COMMON
    jar_name = f"{ANALYSIS_COMMON}-{cfg.version}.jar"
    if (module / jar_name).is_file() and (module / "plugin-descriptor.properties").is_file():
        return module
    jar = _maven_copy(ANALYSIS_COMMON_ARTIFACT.format(version=cfg.version), cfg.base / "downloads", jar_name)
    tmp = Path(tempfile.mkdtemp(dir=module.parent, prefix=".module-"))
    try:
        shutil.copyfile(jar, tmp / jar_name)
        (tmp / "plugin-descriptor.properties").write_text(
            "# written by distilrank opensearch install: the module's jar from Maven Central\n"
            "description=Adds \"built in\" analyzers to OpenSearch.\n"
            f"version={cfg.version}\nname={ANALYSIS_COMMON}\nclassname={ANALYSIS_COMMON_CLASS}\n"
            f"java.version={MIN_JAVA}\nopensearch.version={cfg.version}\ncustom.foldername=\n"
            "extended.plugins=\nhas.native.controller=false\n")
        shutil.rmtree(module, ignore_errors=True)
        tmp.rename(module)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("installed module %s from Maven Central", ANALYSIS_COMMON)
    return module


def _run_user() -> pwd.struct_passwd | None:
    """The account the node runs as: None when we are not root, else the ``distilrank`` system user (created)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(RUN_AS_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", RUN_AS_USER],
                       check=True, capture_output=True)
        logger.info("created system user %s (OpenSearch refuses to run as root)", RUN_AS_USER)
        return pwd.getpwnam(RUN_AS_USER)


def _make_reachable(path: Path, user: pwd.struct_passwd) -> None:
    """Give the run-as user traversal (x only, no listing) of path's ancestors, e.g. /root for ~/.cache."""
    for parent in reversed(path.parents):
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            logger.warning("granting o+x (traverse, not list) on %s so user %s can reach %s", parent, user.pw_name,
                           path)
            parent.chmod(mode | stat.S_IXOTH)


def _chown_tree(path: Path, user: pwd.struct_passwd) -> None:
    for dirpath, dirnames, filenames in os.walk(path):
        os.chown(dirpath, user.pw_uid, user.pw_gid)
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), user.pw_uid, user.pw_gid)


def _as_user(cmd: list[str]) -> list[str]:
    user = _run_user()
    return ["runuser", "-u", user.pw_name, "--", *cmd] if user else cmd


def _env(java_home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["OPENSEARCH_JAVA_HOME"] = str(java_home)
    env.pop("JAVA_HOME", None)
    env.pop("OPENSEARCH_JAVA_OPTS", None)
    return env


def install(cfg: NodeConfig, plugin_zip: Path | None = None) -> Path:
    """Unpack and configure the node with the ``analysis-common`` module (idempotent); install ``plugin_zip``
    replacing any older copy. Returns the install dir."""
    if status(cfg)["running"]:
        raise ConfigError(f"OpenSearch is running from {cfg.install_dir}; stop it first (distilrank opensearch stop)")
    target = cfg.install_dir
    if not (target / "bin" / "opensearch").exists():
        zip_path = fetch_distribution(cfg)
        tmp = Path(tempfile.mkdtemp(dir=cfg.base, prefix=".unpack-"))
        try:
            with zipfile.ZipFile(zip_path) as zf:
                for info in zf.infolist():
                    zf.extract(info, tmp)
                    mode = info.external_attr >> 16
                    if mode:
                        (tmp / info.filename).chmod(mode & 0o777)
            (tmp / f"opensearch-{cfg.version}").rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    _configure(cfg)
    install_analysis_common(cfg)
    user = _run_user()
    if user:
        _make_reachable(target, user)
        _chown_tree(target, user)
    if plugin_zip is not None:
        install_plugin(cfg, plugin_zip)
    return target


def _configure(cfg: NodeConfig) -> None:
    d = cfg.install_dir
    yml = (
        "# written by distilrank opensearch install\n"
        "cluster.name: distilrank\n"
        "node.name: distilrank-node\n"
        "network.host: 127.0.0.1\n"
        f"http.port: {cfg.port}\n"
        "discovery.type: single-node\n"
        f"path.data: {d / 'data'}\n"
        f"path.logs: {d / 'logs'}\n"
        # A shared dev box can sit above the default disk watermarks; a test node must still go green.
        "cluster.routing.allocation.disk.threshold_enabled: false\n"
    )
    (d / "config" / "opensearch.yml").write_text(yml)
    jvm = d / "config" / "jvm.options"
    jvm.write_text(re.sub(r"(?m)^-Xm([sx])\S+$", lambda m: f"-Xm{m.group(1)}{cfg.heap}", jvm.read_text()))


def install_plugin(cfg: NodeConfig, plugin_zip: Path) -> None:
    plugin_zip = Path(plugin_zip).resolve()
    if not plugin_zip.is_file():
        raise MissingPrerequisiteError(f"plugin zip {plugin_zip} not found; build it with "
                                       "`distilrank opensearch build-plugin`")
    tool = str(cfg.install_dir / "bin" / "opensearch-plugin")
    env = _env(find_java_home())
    user = _run_user()
    if (cfg.install_dir / "plugins" / PLUGIN_NAME).exists():
        subprocess.run(_as_user([tool, "remove", PLUGIN_NAME]), env=env, capture_output=True, text=True, check=False)
    staged = plugin_zip
    if user:  # the run-as user must be able to read the zip
        staged = cfg.base / "downloads" / plugin_zip.name
        staged.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(plugin_zip, staged)
        staged.chmod(0o644)
        _make_reachable(staged, user)
    proc = subprocess.run(_as_user([tool, "install", "--batch", staged.as_uri()]), env=env, capture_output=True,
                          text=True)
    if proc.returncode != 0:
        raise MissingPrerequisiteError(f"opensearch-plugin install {staged} failed:\n"
                                       f"{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    logger.info("installed plugin %s", staged)


def _get_json(url: str, timeout: float = 2.0) -> dict[str, object] | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _pid(cfg: NodeConfig) -> int | None:
    try:
        pid = int(cfg.pid_file.read_text().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def status(cfg: NodeConfig) -> dict[str, object]:
    """``{"installed", "running", "pid", "url", "health", "plugins", "modules"}``; never raises for a stopped node."""
    pid = _pid(cfg)
    health = _get_json(f"{cfg.url}/_cluster/health") if pid else None
    plugins_dir = cfg.install_dir / "plugins"
    modules_dir = cfg.install_dir / "modules"
    return {
        "installed": (cfg.install_dir / "bin" / "opensearch").exists(),
        "install_dir": str(cfg.install_dir),
        "version": cfg.version,
        "running": pid is not None,
        "pid": pid,
        "url": cfg.url,
        "health": health.get("status") if health else None,
        "plugins": sorted(p.name for p in plugins_dir.iterdir()) if plugins_dir.is_dir() else [],
        "modules": sorted(p.name for p in modules_dir.iterdir() if not p.name.startswith(".")) if modules_dir.is_dir()
        else [],
    }


def start(cfg: NodeConfig, timeout: float = 180.0) -> str:
    """Start the node as a daemon (as user ``distilrank`` when root) and wait for green/yellow. Returns the URL."""
    if not (cfg.install_dir / "bin" / "opensearch").exists():
        raise MissingPrerequisiteError(f"OpenSearch is not installed in {cfg.install_dir}: "
                                       "run `distilrank opensearch install`")
    if _pid(cfg) is None:
        if _get_json(cfg.url) is not None:
            raise ConfigError(f"something else already answers on {cfg.url}; stop it or pick another --port")
        java_home = find_java_home()
        cfg.pid_file.unlink(missing_ok=True)
        cmd = _as_user([str(cfg.install_dir / "bin" / "opensearch"), "-d", "-p", str(cfg.pid_file)])
        # The daemon inherits our stdout/stderr: pipes would never reach EOF, so they go to a file.
        out_file = cfg.base / "opensearch-start.out"
        with open(out_file, "w") as out:
            proc = subprocess.run(cmd, env=_env(java_home), cwd=cfg.install_dir, stdout=out, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise MissingPrerequisiteError(f"OpenSearch failed to start (java {java_home}):\n"
                                           f"{out_file.read_text()[-3000:]}\nSee {cfg.install_dir / 'logs'}")
    deadline = time.monotonic() + timeout
    seen_pid = False
    while time.monotonic() < deadline:
        health = _get_json(f"{cfg.url}/_cluster/health?wait_for_status=yellow&timeout=1s")
        if health and health.get("status") in ("green", "yellow"):
            logger.info("OpenSearch %s is %s at %s", cfg.version, health["status"], cfg.url)
            return cfg.url
        pid = _pid(cfg)
        seen_pid = seen_pid or pid is not None
        if seen_pid and pid is None:  # it wrote its pid file and then died
            break
        time.sleep(1)
    log = cfg.install_dir / "logs" / "distilrank.log"
    tail = log.read_text()[-3000:] if log.exists() else "(no log)"
    raise MissingPrerequisiteError(f"OpenSearch at {cfg.url} did not become healthy within {timeout:.0f}s; "
                                   f"log tail:\n{tail}")


def stop(cfg: NodeConfig, timeout: float = 60.0) -> bool:
    """Stop the node started by :func:`start`. Returns False when it was not running."""
    pid = _pid(cfg)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _pid(cfg) is not None:
        time.sleep(0.5)
    if _pid(cfg) is not None:
        os.kill(pid, signal.SIGKILL)
    cfg.pid_file.unlink(missing_ok=True)
    return True
