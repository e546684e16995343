"""The ALBERT weight layouts (cnbert.config.ALBERT_EMBEDDING_LAYOUTS): canonical names and shapes,
and the mapping from the TF1 checkpoints users bring.

Framework-neutral, like bert_layout: values are numpy arrays or whatever a framework reads.

"albert" (Google ALBERT; names are Hugging Face AlbertModel's, so HF directories load unchanged):

    bert/embeddings/word_embeddings [V, E]               <-> embeddings.word_embeddings.weight
    bert/encoder/embedding_hidden_mapping_in/kernel      <-> encoder.embedding_hidden_mapping_in.weight
    bert/encoder/transformer/group_0/inner_group_0/attention_1/self/query/kernel
        <-> encoder.albert_layer_groups.0.albert_layers.0.attention.query.weight
    .../inner_group_0/ffn_1/intermediate/output/dense    <-> ...albert_layers.0.ffn_output
    bert/pooler/dense/kernel                             <-> pooler.weight

"factorized_word" (brightmart albert_zh; cnbert's own names, BERT's with one shared layer):

    bert/embeddings/word_embeddings [V, E]               <-> embeddings.word_embeddings.weight
    bert/embeddings/word_embeddings_2 [E, H], no bias    <-> embeddings.word_embeddings_2.weight [H, E]
    bert/embeddings/position_embeddings [P, H]           <-> embeddings.position_embeddings.weight
    bert/encoder/layer_shared/attention/self/query/kernel <-> encoder.layer_shared.attention.self.query.weight
    bert/pooler/dense/kernel                             <-> pooler.dense.weight

What was checked about brightmart albert_zh (github.com/brightmart/albert_zh): modeling.py's
`embedding_lookup_factorized` creates `word_embeddings` [vocab_size, embedding_size] and
`word_embeddings + "_2"` [embedding_size, hidden_size] and returns tf.matmul(lookup, word_embeddings_2),
with no bias; `embedding_postprocessor` then adds the H-wide token-type and position tables and applies
LayerNorm and dropout, exactly as in BERT. `transformer_model` opens variable_scope("layer_shared",
reuse=layer_idx > 0) around BERT's post-LayerNorm layer (attention/self, attention/output,
intermediate, output). albert_config/albert_config_large.json has embedding_size 128, hidden 1024,
24 layers, 16 heads, vocab 21128, hidden_act "gelu", both dropouts 0.0 and no model_type.
kpe/bert-for-tf2 (bert/loader.py, bert/embeddings.py) loads brightmart weights the same way: the
projector maps to word_embeddings_2, "project_embeddings_with_bias = False" and
"project_position_embeddings = False" for brightmart. Note: brightmart's TF `gelu`, like Google
ALBERT's, computes the tanh approximation; cnbert reads "gelu" as the exact erf form everywhere (as
the original list's PyTorch code did with this checkpoint): pass hidden_act="gelu_new" to reproduce
the pretraining activation exactly (they differ by at most 4.7e-4).

Kernels are [in, out] in TF and [out, in] in a torch-style Linear, so they are transposed both ways.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Mapping

import numpy as np

from cnbert.checkpoints.bert_layout import bert_parameter_shapes
from cnbert.checkpoints.google_tf import TFConversion, is_skipped_variable, rename_tf_variables
from cnbert.config import AlbertConfig

# Prefix of the encoder inside ALBERT task models (Hugging Face's `base_model_prefix` for ALBERT).
ALBERT_ENCODER_PREFIX = "albert."
# Pretraining heads of Hugging Face AlbertForPreTraining / AlbertForMaskedLM: ignored and reported.
ALBERT_PRETRAINING_HEAD_PREFIXES = ("predictions.", "sop_classifier.")
# config.json's "architectures" for the factorized layout: no transformers class has these names.
FACTORIZED_ARCHITECTURE_PREFIX = "CnbertFactorizedAlbert"

_SHARED_LAYER = "encoder.layer_shared."

# How a TF variable maps to model parameters, per kind of module:
# (TF suffix, model suffix, transpose).
_TABLE, _DENSE, _NORM, _PROJECTION = "table", "dense", "norm", "projection"
_LEAVES = {
    _TABLE: (("", ".weight", False),),  # embedding tables: the variable itself
    _DENSE: (("/kernel", ".weight", True), ("/bias", ".bias", False)),
    _NORM: (("/gamma", ".weight", False), ("/beta", ".bias", False)),
    _PROJECTION: (("", ".weight", True),),  # a bare [in, out] matrix used as x @ W (no bias)
}

_GOOGLE_LAYER = "bert/encoder/transformer/group_{g}/inner_group_{i}/"
_HF_LAYER = "encoder.albert_layer_groups.{g}.albert_layers.{i}."
BRIGHTMART_LAYER_PREFIX = "bert/encoder/layer_shared/"

# (TF module, model module, kind) per layout.
_MODULES = {
    "albert": (
        ("bert/embeddings/word_embeddings", "embeddings.word_embeddings", _TABLE),
        ("bert/embeddings/position_embeddings", "embeddings.position_embeddings", _TABLE),
        ("bert/embeddings/token_type_embeddings", "embeddings.token_type_embeddings", _TABLE),
        ("bert/embeddings/LayerNorm", "embeddings.LayerNorm", _NORM),
        ("bert/encoder/embedding_hidden_mapping_in", "encoder.embedding_hidden_mapping_in", _DENSE),
        (_GOOGLE_LAYER + "attention_1/self/query", _HF_LAYER + "attention.query", _DENSE),
        (_GOOGLE_LAYER + "attention_1/self/key", _HF_LAYER + "attention.key", _DENSE),
        (_GOOGLE_LAYER + "attention_1/self/value", _HF_LAYER + "attention.value", _DENSE),
        (_GOOGLE_LAYER + "attention_1/output/dense", _HF_LAYER + "attention.dense", _DENSE),
        (_GOOGLE_LAYER + "LayerNorm", _HF_LAYER + "attention.LayerNorm", _NORM),
        (_GOOGLE_LAYER + "ffn_1/intermediate/dense", _HF_LAYER + "ffn", _DENSE),
        (_GOOGLE_LAYER + "ffn_1/intermediate/output/dense", _HF_LAYER + "ffn_output", _DENSE),
        (_GOOGLE_LAYER + "LayerNorm_1", _HF_LAYER + "full_layer_layer_norm", _NORM),
        ("bert/pooler/dense", "pooler", _DENSE),
    ),
    "factorized_word": (
        ("bert/embeddings/word_embeddings", "embeddings.word_embeddings", _TABLE),
        ("bert/embeddings/word_embeddings_2", "embeddings.word_embeddings_2", _PROJECTION),
        ("bert/embeddings/position_embeddings", "embeddings.position_embeddings", _TABLE),
        ("bert/embeddings/token_type_embeddings", "embeddings.token_type_embeddings", _TABLE),
        ("bert/embeddings/LayerNorm", "embeddings.LayerNorm", _NORM),
        (BRIGHTMART_LAYER_PREFIX + "attention/self/query", _SHARED_LAYER + "attention.self.query", _DENSE),
        (BRIGHTMART_LAYER_PREFIX + "attention/self/key", _SHARED_LAYER + "attention.self.key", _DENSE),
        (BRIGHTMART_LAYER_PREFIX + "attention/self/value", _SHARED_LAYER + "attention.self.value", _DENSE),
        (BRIGHTMART_LAYER_PREFIX + "attention/output/dense", _SHARED_LAYER + "attention.output.dense", _DENSE),
        (BRIGHTMART_LAYER_PREFIX + "attention/output/LayerNorm", _SHARED_LAYER + "attention.output.LayerNorm", _NORM),
        (BRIGHTMART_LAYER_PREFIX + "intermediate/dense", _SHARED_LAYER + "intermediate.dense", _DENSE),
        (BRIGHTMART_LAYER_PREFIX + "output/dense", _SHARED_LAYER + "output.dense", _DENSE),
        (BRIGHTMART_LAYER_PREFIX + "output/LayerNorm", _SHARED_LAYER + "output.LayerNorm", _NORM),
        ("bert/pooler/dense", "pooler.dense", _DENSE),
    ),
}
_LAYOUT_NAMES = {"albert": "Google ALBERT", "factorized_word": "brightmart albert_zh"}
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def albert_parameter_shapes(config: AlbertConfig, add_pooling_layer: bool = True) -> dict[str, tuple[int, ...]]:
    """Names and shapes of cnbert's AlbertModel state dict for config.embedding_layout (no "albert."
    prefix); for the "albert" layout these are exactly Hugging Face AlbertModel's. Linear weights are
    [out, in]."""
    V, E, H, I = config.vocab_size, config.embedding_size, config.hidden_size, config.intermediate_size
    if config.embedding_layout == "factorized_word":
        shapes = {}
        for name, shape in bert_parameter_shapes(config.replace(num_hidden_layers=1), add_pooling_layer).items():
            shapes[name.replace("encoder.layer.0.", _SHARED_LAYER)] = shape
        shapes["embeddings.word_embeddings.weight"] = (V, E)
        shapes["embeddings.word_embeddings_2.weight"] = (H, E)
        return shapes
    shapes = {
        "embeddings.word_embeddings.weight": (V, E),
        "embeddings.position_embeddings.weight": (config.max_position_embeddings, E),
        "embeddings.token_type_embeddings.weight": (config.type_vocab_size, E),
        "embeddings.LayerNorm.weight": (E,),
        "embeddings.LayerNorm.bias": (E,),
        "encoder.embedding_hidden_mapping_in.weight": (H, E),
        "encoder.embedding_hidden_mapping_in.bias": (H,),
    }
    for g in range(config.num_hidden_groups):
        for i in range(config.inner_group_num):
            layer = _HF_LAYER.format(g=g, i=i)
            for linear in ("attention.query", "attention.key", "attention.value", "attention.dense"):
                shapes[f"{layer}{linear}.weight"] = (H, H)
                shapes[f"{layer}{linear}.bias"] = (H,)
            for norm in ("attention.LayerNorm", "full_layer_layer_norm"):
                shapes[f"{layer}{norm}.weight"] = (H,)
                shapes[f"{layer}{norm}.bias"] = (H,)
            shapes[f"{layer}ffn.weight"] = (I, H)
            shapes[f"{layer}ffn.bias"] = (I,)
            shapes[f"{layer}ffn_output.weight"] = (H, I)
            shapes[f"{layer}ffn_output.bias"] = (H,)
    if add_pooling_layer:
        shapes["pooler.weight"] = (H, H)
        shapes["pooler.bias"] = (H,)
    return shapes


def albert_architecture(layout: str, head_name: str = "Model", factorized_head_name: str = "") -> str:
    """config.json's "architectures" entry for an ALBERT model with the head `head_name` (e.g.
    "ForQuestionAnswering"): transformers' class "Albert" + head_name in the "albert" layout, whose state
    dict the model has; cnbert's own name in the factorized layout, which no transformers class loads."""
    if layout == "albert":
        return "Albert" + head_name
    return FACTORIZED_ARCHITECTURE_PREFIX + (factorized_head_name or head_name)


def albert_tf_names(config: AlbertConfig, add_pooling_layer: bool = True) -> dict[str, tuple[str, bool]]:
    """Model name (albert_parameter_shapes, no "albert." prefix) -> (its TF1 variable name in
    config.embedding_layout, whether the TF array is the transpose of the model's)."""
    rules = _rules(config.embedding_layout)
    names = {}
    for name in albert_parameter_shapes(config, add_pooling_layer):
        rule, match = next((r, m) for r in rules if (m := r.model.fullmatch(name)))
        names[name] = (rule.tf_template.format(**match.groupdict()), rule.transpose)
    return names


def albert_tf_to_model(variables: Mapping[str, np.ndarray], layout: str,
                       source: str = "TF checkpoint") -> TFConversion:
    """Convert the variables of an ALBERT TF checkpoint in `layout` to model names (no "albert."
    prefix, torch [out, in] kernels); variables outside the layout raise CheckpointError."""
    rules = _rules(layout)

    def rename(name: str) -> tuple[str, bool] | None:
        for rule in rules:
            match = rule.tf.fullmatch(name)
            if match:
                return rule.model_template.format(**match.groupdict()), rule.transpose
        return None

    return rename_tf_variables(variables, rename, is_skipped_variable, source, f"{_LAYOUT_NAMES[layout]} weights")


def model_to_albert_tf(weights: Mapping[str, np.ndarray], layout: str) -> dict[str, np.ndarray]:
    """The inverse of albert_tf_to_model: model names (no "albert." prefix) to TF variables."""
    rules = _rules(layout)
    variables = {}
    for name, value in weights.items():
        for rule in rules:
            match = rule.model.fullmatch(name)
            if match:
                array = np.asarray(value)
                variables[rule.tf_template.format(**match.groupdict())] = (
                    np.ascontiguousarray(array.T) if rule.transpose else array)
                break
        else:
            raise ValueError(f"{name!r} is not a weight of the {layout!r} ALBERT layout")
    return variables


@dataclasses.dataclass(frozen=True)
class _Rule:
    tf: re.Pattern
    model: re.Pattern
    tf_template: str
    model_template: str
    transpose: bool


def _rules(layout: str) -> list[_Rule]:
    if layout not in _MODULES:
        raise ValueError(f"unknown ALBERT layout {layout!r}; expected one of {', '.join(_MODULES)}")
    rules = []
    for tf_module, model_module, kind in _MODULES[layout]:
        for tf_suffix, model_suffix, transpose in _LEAVES[kind]:
            tf_name, model_name = tf_module + tf_suffix, model_module + model_suffix
            rules.append(_Rule(_compile(tf_name), _compile(model_name), tf_name, model_name, transpose))
    return rules


def _compile(template: str) -> re.Pattern:
    """A regex for a name template whose {placeholders} stand for layer numbers."""
    pieces, last = [], 0
    for match in _PLACEHOLDER.finditer(template):
        pieces += [re.escape(template[last:match.start()]), rf"(?P<{match.group(1)}>\d+)"]
        last = match.end()
    return re.compile("".join(pieces) + re.escape(template[last:]))
