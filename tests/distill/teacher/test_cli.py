from __future__ import annotations

import json

from distill.cli import main
from distill.core.formats import read_run
from tests.teacher_data import write_mini


def test_cli_sft_then_rerank(tiny_decoder_dir, demo_data, tmp_path, capsys):
    mini = write_mini(demo_data, tmp_path / "data", n_queries=3, n_extra_docs=20)
    cfg = tmp_path / "sft.json"
    cfg.write_text(json.dumps({"num_negatives": 2, "negative_depth": 6, "batch_size": 2, "max_length": 48}))
    rc = main(["teacher", "sft", "--config", str(cfg), "--out", str(tmp_path / "sft"),
               "--base-model", str(tiny_decoder_dir),
               "--queries", str(mini["queries"]), "--qrels", str(mini["qrels"]), "--corpus", str(mini["corpus"]),
               "--max-steps", "1", "--device", "cpu", "--gen-weight", "0"])
    assert rc == 0
    assert json.loads((tmp_path / "sft" / "config.json").read_text())["config"]["num_negatives"] == 2
    run = tmp_path / "bm25.run"
    assert main(["retrieve", "bm25", "--corpus", str(mini["corpus"]), "--queries", str(mini["queries"]),
                 "--top-k", "5", "--out", str(run)]) == 0
    out = tmp_path / "teacher.run"
    assert main(["teacher", "rerank", "--teacher", str(tmp_path / "sft" / "teacher"), "--corpus", str(mini["corpus"]),
                 "--queries", str(mini["queries"]), "--run", str(run), "--out", str(out), "--top-k", "3",
                 "--device", "cpu"]) == 0
    reranked = read_run(out)
    assert set(reranked) == set(read_run(run)) and all(len(v) <= 3 for v in reranked.values())


def test_cli_errors_map_to_exit_codes(tmp_path, capsys):
    assert main(["teacher", "cpt", "--out", str(tmp_path / "x")]) == 2  # no data source: ConfigError
    assert "exactly one data source" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["teacher", "sft", "--config", str(bad), "--out", str(tmp_path / "y")]) == 2
    assert "invalid JSON" in capsys.readouterr().err
    assert main(["teacher", "rerank", "--corpus", "c", "--queries", "q", "--run", "r", "--out", "o"]) == 2
    assert main(["teacher", "rerank", "--teacher", str(tmp_path), "--corpus", str(tmp_path / "nope.jsonl"),
                 "--queries", "q", "--run", "r", "--out", "o"]) == 4  # missing corpus file: DataError
