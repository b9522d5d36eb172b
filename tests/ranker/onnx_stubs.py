"""Hand-built ONNX graphs in the export layout (tokenizer + model card), for the models an export must never ship:
wrong inputs, wrong outputs, NaN scores. Built with ``onnx.helper`` in milliseconds; no torch."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def _ids(name: str):  # noqa: ANN202
    from onnx import TensorProto, helper

    return helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "sequence"])


def _save(graph, out: Path, tokenizer_dir: Path) -> Path:  # noqa: ANN001
    import onnx
    from onnx import helper

    from distill.core.cross_encoder import TokenCaps
    from distill.core.model_card import ModelCard, write_model_card

    out.mkdir(parents=True, exist_ok=True)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(out / "model.onnx"))
    for name in _TOKENIZER_FILES:
        if (tokenizer_dir / name).exists():
            shutil.copy(tokenizer_dir / name, out / name)
    write_model_card(out, ModelCard(name="stub", onnx_file="model.onnx", precision="fp32",
                                    token_caps=TokenCaps(64, max_query_tokens=None), decision="test stub"))
    return out


def nan_on_token_model(out: Path, tokenizer_dir: Path, token_id: int) -> Path:
    """logit = sqrt(-count(token_id in input_ids)) + 0.01 * tokens: NaN for a pair holding the token, finite else
    (every pair holds [CLS], so ``token_id=101`` answers NaN for every pair)."""
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Equal", ["input_ids", "token"], ["hit"]),
        helper.make_node("Cast", ["hit"], ["hit_f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["hit_f", "axis"], ["hits"], keepdims=1),
        helper.make_node("Neg", ["hits"], ["neg"]),
        helper.make_node("Sqrt", ["neg"], ["root"]),
        helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["mask_f", "axis"], ["length"], keepdims=1),
        helper.make_node("Mul", ["length", "scale"], ["scaled"]),
        helper.make_node("Add", ["root", "scaled"], ["logits"]),
    ]
    inits = [helper.make_tensor("token", TensorProto.INT64, [], [token_id]),
             helper.make_tensor("axis", TensorProto.INT64, [1], [1]),
             helper.make_tensor("scale", TensorProto.FLOAT, [], [0.01])]
    graph = helper.make_graph(nodes, "nan_on_token", [_ids("input_ids"), _ids("attention_mask"),
                                                      _ids("token_type_ids")],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1])], inits)
    return _save(graph, out, tokenizer_dir)


def wrong_inputs_model(out: Path, tokenizer_dir: Path) -> Path:
    """An image model's signature: one float input ``pixel_values``."""
    from onnx import TensorProto, helper

    nodes = [helper.make_node("ReduceSum", ["pixel_values", "axis"], ["logits"], keepdims=1)]
    inits = [helper.make_tensor("axis", TensorProto.INT64, [1], [1])]
    graph = helper.make_graph(nodes, "wrong_inputs",
                              [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["batch", 3])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1])], inits)
    return _save(graph, out, tokenizer_dir)


def two_logits_model(out: Path, tokenizer_dir: Path) -> Path:
    """A two-class classifier: the right inputs, but logits of shape [batch, 2]."""
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
             helper.make_node("ReduceSum", ["mask_f", "axis"], ["length"], keepdims=1),
             helper.make_node("Concat", ["length", "length"], ["logits"], axis=1)]
    inits = [helper.make_tensor("axis", TensorProto.INT64, [1], [1])]
    graph = helper.make_graph(nodes, "two_logits", [_ids("input_ids"), _ids("attention_mask")],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])], inits)
    return _save(graph, out, tokenizer_dir)


def token_id(tokenizer_dir: Path, word: str) -> int:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    tokenizer.no_padding()
    ids = tokenizer.encode(word, add_special_tokens=False).ids
    if len(ids) != 1:
        raise ValueError(f"{word!r} is {len(ids)} tokens; pick a word that is one")
    return int(np.int64(ids[0]))
