from __future__ import annotations

import pytest
import torch

from distill.core.errors import MissingPrerequisiteError
from distill.teacher.decoder_ranker import (
    TeacherRanker,
    TeacherScorer,
    TeacherSpec,
    encode_pairs,
    last_token_index,
    load_teacher,
    position_ids_from_mask,
    save_teacher,
    tokenize_pair,
)

TEMPLATE = "query: {query} document: {title} {text}"
TRIPLES = [("what causes scurvy", "Vitamin C", "Scurvy is caused by a lack of vitamin C in the diet."),
           ("bm25", "", "short"),
           ("long query about protein folding in cells", "Folding", "Chaperones help proteins fold " * 5)]


@pytest.fixture(scope="module")
def ranker_and_tok(tiny_decoder_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(1)
    tok = AutoTokenizer.from_pretrained(tiny_decoder_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_decoder_dir)
    return TeacherRanker(model).eval(), tok


def test_last_token_index_left_and_right():
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert last_token_index(mask).tolist() == [2, 4, 4]
    assert position_ids_from_mask(mask).tolist()[1] == [0, 0, 0, 1, 2]
    with pytest.raises(ValueError, match=r"\[batch, seq\]"):
        last_token_index(torch.ones(3))


def test_left_and_right_padding_give_the_same_scores(ranker_and_tok):
    ranker, tok = ranker_and_tok
    right = encode_pairs(tok, TRIPLES, TEMPLATE, 64, 2, padding_side="right")
    left = encode_pairs(tok, TRIPLES, TEMPLATE, 64, 2, padding_side="left")
    assert right["attention_mask"][1, -1] == 0 and left["attention_mask"][1, 0] == 0  # padding really happened
    with torch.no_grad():
        s_right, s_left = ranker(**right), ranker(**left)
        alone = torch.stack([ranker(**encode_pairs(tok, [t], TEMPLATE, 64, 2)) for t in TRIPLES]).squeeze(-1)
    torch.testing.assert_close(s_right, s_left, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(s_right, alone, atol=1e-4, rtol=1e-4)
    assert len(set(s_right.tolist())) == 3


def test_tokenize_pair_truncates_document_keeps_query_and_end(ranker_and_tok):
    _, tok = ranker_and_tok
    ids, n_prompt = tokenize_pair(tok, "my query", "T", "word " * 500, TEMPLATE, 40, end_id=2)
    assert len(ids) == 40 and ids[-1] == 2
    assert tok.decode(ids[:n_prompt]).endswith("query: my query document:")
    full, _ = tokenize_pair(tok, "q", "Title", "Body text.", TEMPLATE, 64, end_id=2)
    assert full[:-1] == tok("query: q document: Title Body text.")["input_ids"]  # same ids as the plain string


def test_save_load_roundtrip_and_scorer(ranker_and_tok, tmp_path):
    ranker, tok = ranker_and_tok
    save_teacher(ranker, tok, tmp_path / "t", TeacherSpec(template=TEMPLATE, max_length=64, end_token_id=2))
    assert (tmp_path / "t" / "score_head.safetensors").exists()
    assert not list((tmp_path / "t").glob("*.bin")) and not list((tmp_path / "t").glob("*.pt"))
    loaded, _, spec = load_teacher(tmp_path / "t")
    assert spec.max_length == 64 and loaded.model.config.pad_token_id == tok.pad_token_id
    with torch.no_grad():
        expected = ranker(**encode_pairs(tok, TRIPLES, TEMPLATE, 64, 2)).tolist()
    scorer = TeacherScorer(tmp_path / "t", batch_size=2, device="cpu")
    got = scorer.score_triples(TRIPLES)  # batches sorted by length internally, returned in input order
    assert got == pytest.approx(expected, abs=1e-4)
    assert scorer.score([("q", "doc text")])[0] == pytest.approx(scorer.score_triples([("q", "", "doc text")])[0])


def test_load_teacher_rejects_a_plain_model_dir(tiny_decoder_dir):
    with pytest.raises(MissingPrerequisiteError, match="not a teacher directory .*score_head"):
        load_teacher(tiny_decoder_dir)
