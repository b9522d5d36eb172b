"""BodyScanner: limits counted as a body streams in, cut into chunks anywhere; valid JSON is never refused under
its limits, and what it refuses the JSON parser would refuse too."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ranker._body_scan import BodyScanner, ScanLimits
from ranker.protocol import ApiError

LIMITS = ScanLimits("documents", max_items=5, max_item_bytes=40)
ROOMY = ScanLimits("documents", max_items=10**9, max_item_bytes=10**9)


def _feed(body: bytes, limits: ScanLimits = LIMITS, cuts: list[int] | None = None) -> BodyScanner:
    scanner = BodyScanner(limits)
    points = sorted({0, len(body), *[c for c in (cuts or []) if 0 < c < len(body)]})
    for a, b in zip(points, points[1:], strict=False):
        scanner.feed(body[a:b])
    return scanner


def _every_cut(body: bytes, limits: ScanLimits = LIMITS):  # noqa: ANN202
    """The scanner fed ``body`` in two pieces, split at every position (and byte by byte)."""
    yield _feed(body, limits, list(range(len(body))))
    for cut in range(len(body) + 1):
        yield _feed(body, limits, [cut])


@pytest.mark.parametrize(("body", "items"), [
    (b'{"query": "q", "documents": ["a", "b", "c"]}', 3),
    (b'{"documents": [], "query": "q"}', 0),
    (b'\xef\xbb\xbf {"query": "q", "documents": [{"text": "a", "meta": {"x": [1, "]", {"y": "}"}]}}, "b"]}', 2),
    (b'{"query": "q\\"", "documents": ["a\\\\", "b\\"]", 1, null, [2]]}', 5),
    (b'{"query": "q", "docu\\u006dents": ["a", "b"]}', 2),
    (b'{"query": "q", "meta": {"documents": ["a", "b", "c", "d", "e", "f"]}, "documents": ["x"]}', 1),
    (b'{"query": "q", "texts": ["a", "b", "c", "d", "e", "f"], "documents": ["x"]}', 1),
])
def test_counts_the_list_at_any_chunking(body, items):
    json.loads(body.decode("utf-8-sig"))
    for scanner in _every_cut(body, ScanLimits("documents", max_items=5, max_item_bytes=1000)):
        assert scanner.items == items


@pytest.mark.parametrize(("body", "status", "etype", "match"), [
    (b'{"query": "q", "documents": ["a", "b", "c", "d", "e", "f"', 413, "too_many_documents",
     r"more than 5 documents \(max_docs=5\)"),
    (b'{"query": "q", "documents": [1, 2, 3, 4, 5, 6', 413, "too_many_documents", "more than 5"),
    (b'{"query": "q", "docu\\u006dents": [{}, {}, {}, {}, {}, {', 413, "too_many_documents", "more than 5"),
    (b'{"query": "q", "documents": ["a", "' + b"x" * 40, 413, "text_too_long", r"documents\[1\] has more than 40"),
    (b'{"query": "q", "documents": [{"text": "a", "pad": "' + b"x" * 30 + b'"}', 413, "text_too_long",
     r"documents\[0\]"),
    (b'{"query": "' + b"\\n" * 21, 413, "text_too_long", "query has more than 40 bytes"),
    (b'[{"query": "q"}]', 422, "invalid_request", "must be a JSON object"),
    (b'"just a string"', 422, "invalid_request", "must be a JSON object"),
    (b"query=q", 400, "invalid_json", "not valid JSON"),
    (b'{"query": "q"]', 400, "invalid_json", r"unexpected '\]' at byte 13"),
    (b'{"query": "q"} x', 400, "invalid_json", "more after the closing"),
    (b'{"a": ' + b"[" * 70, 400, "invalid_body", "more than 64 levels"),
    (b'{"docu\\qments": 1}', 400, "invalid_json", "field name has a bad escape"),
])
def test_refuses_at_the_chunk_that_crosses(body, status, etype, match):
    for cut in (None, 1, 7, len(body) - 1):
        with pytest.raises(ApiError, match=match) as info:
            _feed(body, cuts=None if cut is None else [cut])
        assert (info.value.status, info.value.type) == (status, etype)


def test_a_long_field_name_is_not_kept():
    scanner = _feed(b'{"' + b"k" * 1_000_000 + b'": 1, "documents": ["a"]}', ROOMY, [10, 300_000])
    assert scanner.items == 1 and scanner._key == "documents"


def test_two_million_documents_stop_after_the_limit():
    body = b'{"query": "q", "documents": [' + b",".join([b'{"text":"x"}'] * 2_000_000) + b"]}"
    scanner = BodyScanner(ScanLimits("documents", 1000, 10_000))
    with pytest.raises(ApiError, match="more than 1000 documents"):
        for start in range(0, len(body), 65536):
            scanner.feed(body[start:start + 65536])
    assert start == 0  # refused in the first chunk


_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6),
                                                                                             inner, max_size=4),
                       max_leaves=12)
_documents = st.lists(st.text(max_size=12) | st.fixed_dictionaries({"text": st.text(max_size=12)}, optional={
    "meta": _values}), max_size=8)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(query=st.text(max_size=20), docs=_documents, extra=st.dictionaries(st.text(max_size=10), _values, max_size=3),
       ascii_only=st.booleans(), indent=st.sampled_from([None, 0, 2]), cuts=st.lists(st.integers(0, 4000), max_size=6))
def test_valid_json_is_never_refused_under_its_limits(query, docs, extra, ascii_only, indent, cuts):
    """Any JSON object, written any way json.dumps writes it and cut anywhere, is scanned without an error, and
    the count equals the list's length."""
    payload = {**{k: v for k, v in extra.items() if k not in ("documents", "query")}, "query": query,
               "documents": docs}
    body = json.dumps(payload, ensure_ascii=ascii_only, indent=indent).encode("utf-8")
    scanner = _feed(body, ROOMY, cuts)
    assert scanner.items == len(docs)
    if indent is None:  # then each element's bytes in the body are exactly its own json.dumps
        sizes = [len(json.dumps(x, ensure_ascii=ascii_only).encode()) for x in [query, *docs]]
        _feed(body, ScanLimits("documents", len(docs), max(sizes)), cuts)  # at the limits exactly: accepted
        if docs:
            with pytest.raises(ApiError, match="more than"):
                _feed(body, ScanLimits("documents", len(docs) - 1, max(sizes)), cuts)
