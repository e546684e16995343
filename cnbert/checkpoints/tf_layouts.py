"""Which layout a TF1 checkpoint is in, told from its variable names, and its conversion to cnbert's
model names: Google BERT (google_tf), Google ALBERT and brightmart albert_zh (albert_layout), siBert
(sibert_layout)."""
from __future__ import annotations

from typing import Mapping

import numpy as np

from cnbert.checkpoints.albert_layout import BRIGHTMART_LAYER_PREFIX, albert_tf_to_model
from cnbert.checkpoints.google_tf import TFConversion, google_to_hf
from cnbert.checkpoints.sibert_layout import is_sibert_variable_names, sibert_to_hf

TF_LAYOUTS = ("bert", "albert", "factorized_word", "sibert")
ALBERT_TF_LAYOUTS = ("albert", "factorized_word")


def detect_tf_layout(names) -> str:
    """One of TF_LAYOUTS, from a TF checkpoint's variable names: "sibert" (siBert), "factorized_word"
    (brightmart albert_zh), "albert" (Google ALBERT), else "bert"."""
    names = list(names)
    if is_sibert_variable_names(names):
        return "sibert"
    if any(n == "bert/embeddings/word_embeddings_2" or n.startswith(BRIGHTMART_LAYER_PREFIX) for n in names):
        return "factorized_word"
    if any(n.startswith(("bert/encoder/transformer/", "bert/encoder/embedding_hidden_mapping_in/")) for n in names):
        return "albert"
    return "bert"


def convert_tf_variables(variables: Mapping[str, np.ndarray],
                         source: str = "TF checkpoint") -> tuple[TFConversion, str]:
    """Convert a TF1 checkpoint in any of TF_LAYOUTS to cnbert's names (Hugging Face BertModel /
    AlbertModel names, or cnbert's factorized ALBERT ones), detecting the layout from the variable
    names; returns (conversion, layout)."""
    layout = detect_tf_layout(variables)
    if layout == "bert":
        return google_to_hf(variables, source=source), layout
    if layout == "sibert":
        return sibert_to_hf(variables, source=source), layout
    return albert_tf_to_model(variables, layout, source=source), layout
