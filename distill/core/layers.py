"""Layer selection for BERT-style encoders: which layers a shallower student keeps, and the one dropper.

Student initialisation (``distill.student``) and the export's layer cut (``export.layers``) both use
these, so an L3 cut at export is the L3 that ``distilrank student`` would initialise. "spread" keeps
evenly spaced layers, the first and last included (the lowest layer carries lexical matching and the
highest the task head's input); "first" keeps the bottom ``keep`` layers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from distill.core.errors import ConfigError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = ["drop_layers", "select_layers"]


def select_layers(total: int, keep: int, strategy: Literal["spread", "first"] = "spread") -> list[int]:
    """Indices of the layers kept (sorted). See the module docstring for why."""
    if not 1 <= keep <= total:
        raise ConfigError(f"cannot keep {keep} of {total} layers; choose 1..{total}")
    if strategy == "first" or keep == total:
        return list(range(keep))
    if keep == 1:
        return [total - 1]
    return sorted({round(i * (total - 1) / (keep - 1)) for i in range(keep)})


def drop_layers(model: PreTrainedModel, num_layers: int, strategy: Literal["spread", "first"] = "spread") -> list[int]:
    """Keep ``num_layers`` encoder layers of a BERT-style model in place; returns the kept indices.

    The one layer dropper: student initialisation and the compression report's L3/L2 both use it.
    """
    import torch

    base = getattr(model, model.base_model_prefix, model)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if layers is None:
        raise ConfigError(f"{type(model).__name__} has no encoder.layer list; layer dropping supports BERT-style "
                          "encoders (BERT, MiniLM, RoBERTa, ELECTRA). Set student.num_layers: null to keep all layers.")
    keep = select_layers(len(layers), num_layers, strategy)
    base.encoder.layer = torch.nn.ModuleList([layers[i] for i in keep])  # type: ignore[union-attr]
    model.config.num_hidden_layers = len(keep)
    return keep
