"""Which of a model card's recipes the ranker serves, and the OpenVINO scorer for a card whose recipe runs there.

``provider`` (``distilrank serve --provider``) names what runs the model:

* ``auto``: the card's own recipe, or its runner-up where this machine cannot run it (bf16 without AMX or
  AVX512-BF16, or openvino not installed), with a warning. ONNX Runtime int8 with signed weights, made on a CPU with
  VNNI, can saturate on an x86 CPU without it: served by the runner-up where the card has one, else served with a
  warning (as cards made before runner-ups were);
* ``cpu`` / ``cuda``: an ONNX Runtime recipe: the card's own, or the runner-up of an OpenVINO card;
* ``openvino``: the card's own OpenVINO recipe; an error when the card has none or this machine cannot run it.

A fallback never fails silently: the warning is logged, returned to the runtime (``RerankRuntime.warnings``) and
heads the served card's ``decision``, which ``/info`` shows.
"""

from __future__ import annotations

import logging
from pathlib import Path

from distill.core.cross_encoder import CrossEncoderScorer, PairEncoder, session_layout
from distill.core.errors import ConfigError, MissingPrerequisiteError
from distill.core.model_card import ModelCard

__all__ = ["PROVIDERS", "cannot_run", "openvino_scorer", "served_card"]

logger = logging.getLogger(__name__)

PROVIDERS = ("auto", "cpu", "cuda", "openvino")
#: provider -> the runtime it runs (auto: the card's own)
_RUNTIME = {"cpu": "onnxruntime", "cuda": "onnxruntime", "openvino": "openvino"}


#: ISA levels whose int8 recipes use signed weights that need VNNI to score as gated (export._onnx._weight_types)
_SIGNED_INT8 = ("avx512_vnni", "amx")


def cannot_run(runtime: str, precision: str, made_for: str | None = None) -> str | None:
    """Why this machine cannot serve a recipe of ``runtime`` at ``precision`` made for the ISA level ``made_for``;
    None when it can. The ISA is the one :func:`distill.core.isa.machine_isa` acts on (``DISTILRANK_ISA`` pretends
    another machine)."""
    if runtime == "openvino":
        try:
            import openvino  # noqa: F401
        except ImportError:
            return "openvino is not installed (pip install 'distilrank[openvino]')"
    from distill.core.isa import machine_isa

    if precision == "bf16":
        machine = machine_isa()
        if not machine.bf16:
            return (f"bf16 needs AMX or AVX512-BF16, and this machine has neither ({machine.isa}, from "
                    f"{machine.source})")
    if runtime == "onnxruntime" and precision == "int8" and made_for in _SIGNED_INT8:
        machine = machine_isa(ask_openvino=False)  # the flags alone: an ONNX Runtime card never loads openvino
        if machine.isa in ("avx2", "avx512"):
            return (f"int8 with signed weights made for {made_for} can saturate without VNNI, and this machine is "
                    f"{machine.isa} (from {machine.source})")
    return None


def served_card(card: ModelCard, provider: str) -> tuple[ModelCard, list[str]]:
    """The card to serve under ``provider`` and the warnings of a fallback: ``card`` itself, or its runner-up's
    view (:meth:`~distill.core.model_card.ModelCard.served_by_runner_up`) with the reason heading its decision."""
    if provider not in PROVIDERS:
        raise ConfigError(f"provider={provider!r}: choose {', '.join(PROVIDERS)}")
    wanted = _RUNTIME.get(provider, card.runtime)
    reason = cannot_run(card.runtime, card.precision, card.isa)
    recipe = card.recipe or f"{card.runtime}-{card.precision}"
    if wanted == "openvino" and card.runtime != "openvino":
        raise ConfigError(f"provider=openvino but the model card's recipe ({recipe}) runs on {card.runtime}; export "
                          "with --runtime openvino or auto, or serve with --provider auto")
    if provider == "openvino" and reason:
        raise MissingPrerequisiteError(f"provider=openvino cannot serve {recipe}: {reason}")
    if wanted == card.runtime and reason is None:
        return card, []
    why = reason or f"provider={provider} runs {wanted} recipes"
    if card.runner_up is None and card.runtime == "onnxruntime" and wanted == card.runtime and reason:
        logger.warning("serving %s anyway (the model card has no runner-up): %s", recipe, reason)
        return card.replace(decision=f"served although {reason}. Export decision: {card.decision}"), [reason]
    if card.runner_up is None:
        raise MissingPrerequisiteError(f"cannot serve {recipe}: {why}, and the model card has no runner-up recipe; "
                                       "serve with another --provider or re-export on this machine")
    message = f"serving the runner-up recipe {card.runner_up.recipe} instead of the card's {recipe}: {why}"
    logger.warning("%s", message)
    served = card.served_by_runner_up()
    return served.replace(decision=f"{message}. Export decision: {card.decision}"), [message]


def openvino_scorer(root: Path, card: ModelCard, encoder: PairEncoder, chunk: int, threads: int | None,
                    sessions: int | None) -> CrossEncoderScorer:
    """The card's OpenVINO model at its precision, with :func:`session_layout`'s streams and threads."""
    from distill.core.openvino_backend import OpenVinoBackend

    streams, per_stream = session_layout(chunk, threads, sessions)
    first, *more = OpenVinoBackend.load_pool(root / card.onnx_file, streams, per_stream, card.precision)
    logger.info("loaded %s (%s, %s, caps %s) on OpenVINO CPU: %d stream(s) x %d thread(s), %d pair(s) per call",
                card.onnx_file, card.precision, card.onnx_sha256[:12], card.token_caps.to_dict(), streams,
                first.threads, chunk)
    return CrossEncoderScorer(encoder, first, chunk, more)
