"""Small data sets for the teacher tests, cut from the bundled SciFact subset."""

from __future__ import annotations

import json
from pathlib import Path

from distill.core.formats import read_qrels, read_queries


def write_mini(demo_data: Path, out: Path, n_queries: int = 4, n_extra_docs: int = 30) -> dict[str, Path]:
    """n_queries train queries, their qrels, and a corpus of their positives + the first n_extra_docs docs."""
    out.mkdir(parents=True, exist_ok=True)
    queries = read_queries(demo_data / "queries.train.tsv")
    qrels = read_qrels(demo_data / "qrels.train.txt")
    qids = [q for q in queries if q in qrels][:n_queries]
    wanted = {d for q in qids for d in qrels[q]}
    lines = (demo_data / "corpus.jsonl").read_text(encoding="utf-8").splitlines()
    kept = [ln for i, ln in enumerate(lines) if i < n_extra_docs or json.loads(ln)["_id"] in wanted]
    paths = {"corpus": out / "corpus.jsonl", "queries": out / "queries.tsv", "qrels": out / "qrels.txt"}
    paths["corpus"].write_text("\n".join(kept) + "\n", encoding="utf-8")
    paths["queries"].write_text("".join(f"{q}\t{queries[q].text}\n" for q in qids), encoding="utf-8")
    paths["qrels"].write_text("".join(f"{q} 0 {d} {r}\n" for q in qids for d, r in qrels[q].items()), encoding="utf-8")
    return paths
