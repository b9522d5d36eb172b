"""The rerank wire protocol: request/response models shared by the server and the client.

Two APIs are served from the same model:

* ``POST /v1/rerank`` -- Cohere-compatible. ``relevance_score`` is ``sigmoid(logit)`` in [0, 1] by
  default (non-negative, as Lucene/OpenSearch scores must be); servers started with
  ``--scores raw`` return the raw logit instead. ``meta.score`` says which.
* ``POST /rerank`` -- Hugging Face TEI-compatible. ``score`` is ``sigmoid(logit)`` unless the request
  sets ``raw_scores``, as in TEI.

Results are always sorted by score, descending; ``index`` points into the request's list. Unknown
request fields are rejected (422) so a typo is never silently ignored, and so are values of the wrong JSON
type (``"top_n": "2"``, ``"top_n": true``, ``"return_documents": "yes"``): nothing is coerced. Over-long texts are
truncated by tokens (the document side, to the model's ``max_seq_len``), never rejected for length
in tokens; ``--max-chars`` bounds characters per text. Every text must be valid Unicode: a lone
UTF-16 surrogate (JSON ``"\\ud800"``) cannot be encoded as UTF-8 for the tokenizer and is rejected with
422 naming the field (``query``, ``documents.3``, ``texts.0``), before it can reach a batch.

Every 4xx/5xx body has the same shape, :class:`ErrorResponse`: ``{"error": {"type", "message"}}``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "ApiError",
    "DEADLINE_HEADER",
    "CohereDocument",
    "ErrorBody",
    "ErrorResponse",
    "HealthResponse",
    "InfoResponse",
    "ReadyResponse",
    "RerankMeta",
    "RerankRequest",
    "RerankResponse",
    "RerankResult",
    "ReturnedDocument",
    "TEIRerankRequest",
    "TEIRerankResult",
]

#: Header carrying an optional per-request deadline in milliseconds (-> 504 when it cannot be met).
DEADLINE_HEADER = "X-Request-Timeout-Ms"


def _non_blank(value: str, what: str) -> str:
    if not value.strip():
        raise ValueError(f"{what} is empty; send a non-empty string")
    return value


def _valid_unicode(value: str) -> str:
    """Reject text that has no UTF-8 encoding (lone surrogates): the tokenizer would raise on it."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = value[exc.start]
        raise ValueError(f"invalid Unicode: lone surrogate U+{ord(bad):04X} at character {exc.start}; "
                         "send valid UTF-8 text (pair the surrogates or drop them client-side)") from None
    return value


def _valid_document(value: str | CohereDocument) -> str | CohereDocument:
    _valid_unicode(value if isinstance(value, str) else value.text)
    return value


#: a text that will be scored; the validator runs per item, so an error's location is ``documents.3``
Text = Annotated[str, AfterValidator(_valid_unicode)]


class CohereDocument(BaseModel):
    """A document given as an object; only ``text`` is scored, other fields are accepted and ignored
    (Cohere lets callers attach ids and metadata)."""

    model_config = ConfigDict(extra="allow")

    text: str  # checked for valid Unicode by RerankRequest, so the error names documents.<i>

    @field_validator("text")
    @classmethod
    def _text_not_blank(cls, value: str) -> str:
        return _non_blank(value, "document text")


class RerankRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: Text = Field(description="The search query. Must not be blank.")
    documents: list[Annotated[str | CohereDocument, AfterValidator(_valid_document)]] = Field(
        min_length=1, description='Texts to rank: strings or objects with a "text" field.')
    top_n: int | None = Field(default=None, ge=1, strict=True,
                              description="Return only the best n results (default: all).")
    return_documents: bool = Field(default=False, strict=True, description="Echo each document's text in the results.")
    model: str | None = Field(default=None, description="Accepted for Cohere compatibility; the server has one model.")
    max_chunks_per_doc: int | None = Field(default=None, ge=1, strict=True,
                                           description="Accepted for Cohere compatibility; ignored.")

    @field_validator("query")
    @classmethod
    def _query_not_blank(cls, value: str) -> str:
        return _non_blank(value, "query")

    @field_validator("documents")
    @classmethod
    def _docs_not_blank(cls, value: list[str | CohereDocument]) -> list[str | CohereDocument]:
        for i, doc in enumerate(value):
            if isinstance(doc, str) and not doc.strip():
                raise ValueError(f"documents[{i}] is empty; send non-empty texts (drop empty ones client-side)")
        return value

    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]


class ReturnedDocument(BaseModel):
    text: str


class RerankResult(BaseModel):
    index: int = Field(description="Position of the document in the request's documents list.")
    relevance_score: float
    document: ReturnedDocument | None = Field(default=None, description="Present when return_documents was true.")


class RerankMeta(BaseModel):
    model_config = ConfigDict(extra="allow")

    api_version: dict[str, str] = Field(default_factory=lambda: {"version": "2"})
    billed_units: dict[str, int] = Field(default_factory=lambda: {"search_units": 1})
    model: str
    score: Literal["sigmoid", "raw_logit"]
    cached: int = Field(default=0, description="How many scores came from the score cache.")


class RerankResponse(BaseModel):
    id: str
    results: list[RerankResult]
    meta: RerankMeta


class TEIRerankRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: Text
    texts: list[Text] = Field(min_length=1)
    return_text: bool = Field(default=False, strict=True, description="Echo each text in the results.")
    truncate: bool = Field(default=True, strict=True,
                           description="Accepted for TEI compatibility; texts are always truncated by tokens.")
    raw_scores: bool = Field(default=False, strict=True, description="Return raw logits instead of sigmoid(logit).")
    truncation_direction: Literal["right", "Right"] = "right"

    @field_validator("query")
    @classmethod
    def _query_not_blank(cls, value: str) -> str:
        return _non_blank(value, "query")

    @field_validator("texts")
    @classmethod
    def _texts_not_blank(cls, value: list[str]) -> list[str]:
        for i, text in enumerate(value):
            if not text.strip():
                raise ValueError(f"texts[{i}] is empty; send non-empty texts")
        return value


class TEIRerankResult(BaseModel):
    index: int
    score: float
    text: str | None = None


class ErrorBody(BaseModel):
    type: str = Field(description="Machine-readable error kind, e.g. invalid_request, queue_full.")
    message: str = Field(description="What was wrong and how to fix it.")


class ErrorResponse(BaseModel):
    error: ErrorBody


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"


class ReadyResponse(BaseModel):
    ready: bool
    reason: str | None = None


class InfoResponse(BaseModel):
    model: str
    onnx_file: str
    precision: str
    runtime: str = Field("onnxruntime", description="The inference runtime the model card names.")
    max_seq_len: int
    token_caps: dict[str, int | None] = Field(description="The token caps the model was gated with.")
    pairs_per_call: int | None = Field(None, description="Most pairs per inference call (null: any number).")
    model_sha256: str
    card_sha256: str = Field(description="sha256 of model_card.json: replicas serving one model report the same.")
    providers: list[str]
    sessions: int = Field(1, description="ONNX Runtime sessions scoring in parallel.")
    score: Literal["sigmoid", "raw_logit"] = Field(description="The convention of relevance_score in /v1/rerank.")
    interpolation: dict[str, Any] | None = Field(
        None, description="The blend with the first stage the model was measured with (first_stage_weight, "
                          "first_stage_norm, ranker_norm, chosen_by, depth, score_convention); null for an export "
                          "made outside a pipeline.")
    limits: dict[str, int | float | bool]
    card: dict[str, Any] = Field(description="Selected model card fields (metrics, gates, decision).")
    warnings: list[str] = Field(default_factory=list, description="Why the model is served other than its card "
                                "says, e.g. the runner-up recipe on a machine that cannot run the chosen one.")


class ApiError(Exception):
    """Raised by handlers; rendered as ``{"error": {"type", "message"}}`` with ``status``."""

    def __init__(self, status: int, type_: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict[str, dict[str, str]]:
        return ErrorResponse(error=ErrorBody(type=self.type, message=self.message)).model_dump()
