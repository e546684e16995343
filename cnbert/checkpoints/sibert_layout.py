"""siBert TF1 checkpoints (ewrfcas/SiBert_tensorflow) to Hugging Face BertModel names.

siBert's encoder (models/SiBert.py) is BERT's post-LayerNorm encoder under other variable names, with
two differences that live elsewhere: its FFN activation is blocksparse's fast_gelu, x·σ(1.702x)
(config hidden_act "quick_gelu", see cnbert.config.SIBERT_KEYS), and every LayerNorm uses epsilon 1e-5.
Its `conv1d` layers keep the weight as `w` [in, out] (transposed for a torch Linear) and `bias`.

    bert_model/embedding/word_embedding                  <-> embeddings.word_embeddings.weight
    bert_model/embedding/LayerNorm_emb/gamma, beta       <-> embeddings.LayerNorm.weight, bias
    bert_model/transformers/layer_3/self_attention/proj_q/w
                                                         <-> encoder.layer.3.attention.self.query.weight
    .../layer_3/attention_output/proj_a                  <-> encoder.layer.3.attention.output.dense
    .../layer_3/attention_output/LayerNorm_att           <-> encoder.layer.3.attention.output.LayerNorm
    .../layer_3/intermediate/proj_m1                     <-> encoder.layer.3.intermediate.dense
    .../layer_3/output/proj_m2                           <-> encoder.layer.3.output.dense
    .../layer_3/output/LayerNorm_output                  <-> encoder.layer.3.output.LayerNorm
    bert_model/pooler/cls_pooler_dense                   <-> pooler.dense

siBert's `layer_norm` names its scale and shift `gamma` and `beta` (models/SiBert.py); its local
variables are called `gain` and `bias`, and descriptions of the checkpoint use either. Either pair loads.

`cls_pooler_dense` is BERT's pooler (dense + tanh on the [CLS] vector). Skipped, like Google's cls/*:
`pooler/pooler_dense` (applied to every position, it feeds only the sentence-choice pretraining loss),
`pretrain_output/*` (the pretraining heads), the optimizer slots (`adam_m`, `adam_v`), and every
variable outside bert_model/: the model lives entirely under it, and pretrain.py's training state lies
outside (global_step; with --float16, its default, the loss-scale manager's loss_scale, good_steps and
bad_steps; blocksparse's Entropy from bs.set_entropy()).
"""
from __future__ import annotations

import re
from typing import Mapping

import numpy as np

from cnbert.checkpoints.google_tf import TFConversion, is_skipped_variable, rename_tf_variables

SIBERT_PREFIX = "bert_model/"
_SKIPPED_PREFIXES = ("bert_model/pretrain_output/", "bert_model/pooler/pooler_dense/")

_WEIGHT_LEAVES = {"w": ("weight", True), "bias": ("bias", False)}
_NORM_LEAVES = {"gamma": "weight", "gain": "weight", "beta": "bias", "bias": "bias"}
_EMBEDDINGS = {
    "bert_model/embedding/word_embedding": "embeddings.word_embeddings.weight",
    "bert_model/embedding/position_embedding": "embeddings.position_embeddings.weight",
    "bert_model/embedding/token_type_embedding": "embeddings.token_type_embeddings.weight",
}
# siBert module (under bert_model/transformers/layer_N/) -> BertModel module (under encoder.layer.N.)
_LAYER_DENSE = {
    "self_attention/proj_q": "attention.self.query",
    "self_attention/proj_k": "attention.self.key",
    "self_attention/proj_v": "attention.self.value",
    "attention_output/proj_a": "attention.output.dense",
    "intermediate/proj_m1": "intermediate.dense",
    "output/proj_m2": "output.dense",
}
_LAYER_NORMS = {
    "attention_output/LayerNorm_att": "attention.output.LayerNorm",
    "output/LayerNorm_output": "output.LayerNorm",
}
_LAYER = re.compile(r"bert_model/transformers/layer_(\d+)/(.+)/(\w+)")


def is_sibert_variable_names(names) -> bool:
    """Whether a TF checkpoint's variable names are siBert's (its encoder lives under bert_model/)."""
    return any(name.startswith(SIBERT_PREFIX) for name in names)


def sibert_to_hf(variables: Mapping[str, np.ndarray], source: str = "TF checkpoint") -> TFConversion:
    """Convert siBert variables to Hugging Face BertModel names (torch [out, in] kernels). Pretraining
    heads, optimizer slots and the training state outside bert_model/ are skipped and listed; any other
    variable under bert_model/, or a LayerNorm with both naming pairs, raises CheckpointError naming it."""
    return rename_tf_variables(variables, _hf_name, _is_skipped, source, "siBert encoder weights")


def _is_skipped(name: str) -> bool:
    return is_skipped_variable(name) or name.startswith(_SKIPPED_PREFIXES) or not name.startswith(SIBERT_PREFIX)


def _hf_name(name: str) -> tuple[str, bool] | None:
    """(BertModel name, whether to transpose), or None for a name outside siBert's encoder."""
    if name in _EMBEDDINGS:
        return _EMBEDDINGS[name], False
    module, _, leaf = name.rpartition("/")
    if module == "bert_model/embedding/LayerNorm_emb" and leaf in _NORM_LEAVES:
        return f"embeddings.LayerNorm.{_NORM_LEAVES[leaf]}", False
    if module == "bert_model/pooler/cls_pooler_dense" and leaf in _WEIGHT_LEAVES:
        hf_leaf, transpose = _WEIGHT_LEAVES[leaf]
        return f"pooler.dense.{hf_leaf}", transpose
    match = _LAYER.fullmatch(name)
    if match is None:
        return None
    index, layer_module, leaf = match.groups()
    if layer_module in _LAYER_DENSE and leaf in _WEIGHT_LEAVES:
        hf_leaf, transpose = _WEIGHT_LEAVES[leaf]
        return f"encoder.layer.{int(index)}.{_LAYER_DENSE[layer_module]}.{hf_leaf}", transpose
    if layer_module in _LAYER_NORMS and leaf in _NORM_LEAVES:
        return f"encoder.layer.{int(index)}.{_LAYER_NORMS[layer_module]}.{_NORM_LEAVES[leaf]}", False
    return None
