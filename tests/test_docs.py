"""The user documentation: every relative link in README.md and docs/*.md resolves (anchors into Markdown files
included), the README stays short, and no tracked text or file name labels a result by the numbered period of
work that produced it. Reads files and runs git only: no network, no heavy imports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote

import pytest

REPO = Path(__file__).resolve().parent.parent
README_MAX_LINES = 250

_FENCE = re.compile(r"^\s*(```|~~~)")
_CODE_SPAN = re.compile(r"`[^`]*`")
#: [text](target) and ![alt](target), with an optional "title"
_INLINE_LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
#: [label]: target
_REFERENCE_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_HTML_ANCHOR = re.compile(r"<a\s+(?:id|name)=\"([^\"]+)\"")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def doc_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def prose_lines(path: Path) -> list[tuple[int, str]]:
    """``(line number, text)`` outside fenced code blocks, with inline code spans removed."""
    out: list[tuple[int, str]] = []
    in_fence = False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if _FENCE.match(line):
            in_fence = not in_fence
            continue
        if not in_fence:
            out.append((number, _CODE_SPAN.sub("", line)))
    return out


def links(path: Path) -> list[tuple[int, str]]:
    """Every link target of ``path``: inline links, images and reference definitions."""
    found: list[tuple[int, str]] = []
    for number, line in prose_lines(path):
        found += [(number, m.group(1)) for m in _INLINE_LINK.finditer(line)]
        ref = _REFERENCE_DEF.match(line)
        if ref:
            found.append((number, ref.group(1)))
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: link markup reduced to its text, lower case, punctuation dropped,
    spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = text.replace("`", "").lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors GitHub renders for ``path`` (repeated headings get ``-1``, ``-2``, ...)."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    in_fence = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        out.update(_HTML_ANCHOR.findall(line))
        heading = _HEADING.match(line)
        if heading:
            base = slug(heading.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            out.add(base if count == 0 else f"{base}-{count}")
    return out


def test_docs_exist() -> None:
    assert (REPO / "README.md").is_file()
    names = {p.name for p in (REPO / "docs").glob("*.md")}
    assert {"results.md", "design.md"} <= names, names


def test_readme_is_short() -> None:
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail into docs/"


@pytest.mark.parametrize("doc", doc_files(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_relative_links_resolve(doc: Path) -> None:
    broken: list[str] = []
    for number, target in links(doc):
        if _SCHEME.match(target):
            continue  # http(s), mailto: not checked (no network)
        path_part, _, anchor = target.partition("#")
        resolved = (doc.parent / unquote(path_part)).resolve() if path_part else doc
        where = f"{doc.relative_to(REPO)}:{number}: {target}"
        if not resolved.exists():
            broken.append(f"{where} (no such file)")
        elif anchor and resolved.is_file() and resolved.suffix == ".md" and unquote(anchor) not in anchors(resolved):
            broken.append(f"{where} (no heading with anchor #{anchor})")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_link_checker_sees_links() -> None:
    """Guard against a parser that silently finds nothing."""
    readme = [t for _, t in links(REPO / "README.md")]
    assert any(t.startswith("docs/results.md#") for t in readme), readme
    assert slug("Compression report: depth × precision") == "compression-report-depth--precision"
    assert slug("`make demo` on the bundled data") == "make-demo-on-the-bundled-data"


@pytest.fixture(scope="module")
def git_checkout() -> Path:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    inside = subprocess.run(["git", "rev-parse", "--is-inside-work-tree"], cwd=REPO, capture_output=True, text=True)
    if inside.returncode != 0 or inside.stdout.strip() != "true":
        pytest.skip("not a git checkout")
    return REPO


def test_no_text_labels_results_by_period_of_work(git_checkout: Path) -> None:
    # ONNX Runtime and HTTP sessions are other things: `--sessions N`, "2 sessions", session_layout pass.
    grep = subprocess.run(["git", "grep", "-inE", r"\bsessions? ?[0-9]+\b", "--", ".", ":!*.trec", ":!*.jsonl"],
                          cwd=git_checkout, capture_output=True, text=True)
    assert grep.returncode in (0, 1), grep.stderr  # 1 = no match
    hits = [line for line in grep.stdout.splitlines() if "--sessions" not in line]
    assert not hits, "\n".join(hits[:20])


def test_no_file_name_labels_results_by_period_of_work(git_checkout: Path) -> None:
    files = subprocess.run(["git", "ls-files"], cwd=git_checkout, capture_output=True, text=True, check=True).stdout
    hits = [name for name in files.splitlines() if re.search(r"session_?[0-9]", name, re.IGNORECASE)]
    assert not hits, hits
