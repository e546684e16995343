"""Google TF1 BERT checkpoints (Google BERT, HIT chinese-(roberta-)wwm-ext, brightmart roberta_zh).

Pure name mapping between Google variable names and Hugging Face `BertModel` names over
{name: numpy array} dicts, plus a reader that imports TensorFlow only when called.

    bert/embeddings/word_embeddings                      <-> embeddings.word_embeddings.weight
    bert/embeddings/LayerNorm/gamma, beta                <-> embeddings.LayerNorm.weight, bias
    bert/encoder/layer_3/attention/self/query/kernel     <-> encoder.layer.3.attention.self.query.weight
    bert/pooler/dense/bias                               <-> pooler.dense.bias

Kernels are [in, out] in TF and [out, in] in a torch Linear, so they are transposed both ways.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from cnbert.checkpoints.bert_layout import BERT_NAME, CheckpointError, ConvertedTFWeights, reading_weights

_TF_PREFIX = "bert/"
# Optimizer state and pretraining heads that fine-tuning never reads.
_SKIPPED_SUFFIXES = ("/adam_m", "/adam_v")
_SKIPPED_NAMES = ("global_step",)
_SKIPPED_PREFIXES = ("cls/",)
_TF_LAYER = re.compile(r"layer_(\d+)")
_HF_LAYER = re.compile(r"layer\.(\d+)")


@dataclasses.dataclass
class TFConversion:
    """`weights`: Hugging Face BertModel names (no "bert." prefix) to arrays in the torch layout,
    remembering each one's TF variable and stored shape (ConvertedTFWeights.sources);
    `skipped`: TF variables deliberately not converted (optimizer slots, global_step, cls/* heads)."""

    weights: ConvertedTFWeights
    skipped: list[str]


def google_to_hf(variables: Mapping[str, np.ndarray], source: str = "TF checkpoint") -> TFConversion:
    """Convert Google BERT variables to Hugging Face BertModel names; unknown variables raise."""
    return rename_tf_variables(variables, _hf_name, is_skipped_variable, source, "Google BERT weights",
                               hint=_layout_hint)


def rename_tf_variables(variables: Mapping[str, np.ndarray], rename: Callable[[str], tuple[str, bool] | None],
                        skip: Callable[[str], bool], source: str, kind: str,
                        hint: Callable[[list[str]], str] = lambda unknown: "") -> TFConversion:
    """The conversion every TF1 layout shares: `skip(name)` variables are listed as skipped; the rest
    go through `rename(name)`, which gives (model name, whether to transpose the [in, out] kernel) or
    None for a name outside the layout. Names outside it (listed as not `kind`, plus `hint(unknown)`)
    and two variables for one model name raise CheckpointError."""
    weights, skipped, unknown, origin = {}, [], [], {}
    for name, value in variables.items():
        if skip(name):
            skipped.append(name)
            continue
        converted = rename(name)
        if converted is None:
            unknown.append(name)
            continue
        model_name, transpose = converted
        if model_name in origin:
            first, second = sorted((origin[model_name], name))
            raise CheckpointError(source, "", f"{first} and {second} both hold {model_name}")
        origin[model_name] = name
        array = np.asarray(value)
        weights[model_name] = np.ascontiguousarray(array.T) if transpose else array
    if unknown:
        raise CheckpointError(source, "", f"variables that are not {kind}: {sorted(unknown)[:12]}{hint(unknown)}")
    sources = {model_name: (name, np.shape(variables[name])) for model_name, name in origin.items()}
    return TFConversion(weights=ConvertedTFWeights(weights, sources), skipped=sorted(skipped))


def is_skipped_variable(name: str) -> bool:
    """Whether a TF variable is one fine-tuning never reads (optimizer slots, global_step, cls/* heads)."""
    return name in _SKIPPED_NAMES or name.endswith(_SKIPPED_SUFFIXES) or name.startswith(_SKIPPED_PREFIXES)


def hf_to_google(weights: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The inverse of `google_to_hf` for BertModel weights (names without the "bert." prefix)."""
    variables = {}
    for name, value in weights.items():
        if not BERT_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a Hugging Face BertModel weight name")
        *path, leaf = _HF_LAYER.sub(r"layer_\1", name).split(".")
        owner = path[-1]
        array = np.asarray(value)
        if owner.endswith("_embeddings"):
            variables[_TF_PREFIX + "/".join(path)] = array
        elif owner == "LayerNorm":
            variables[_TF_PREFIX + "/".join(path + ["gamma" if leaf == "weight" else "beta"])] = array
        elif leaf == "weight":
            variables[_TF_PREFIX + "/".join(path + ["kernel"])] = np.ascontiguousarray(array.T)
        else:
            variables[_TF_PREFIX + "/".join(path + ["bias"])] = array
    return variables


def _tensorflow(prefix: Path):
    """TensorFlow, imported only to read a TF checkpoint: it is heavy, and an optional dependency."""
    try:
        import tensorflow as tf
    except ImportError as e:
        raise ImportError(f"{prefix} is a TensorFlow checkpoint, and reading one needs TensorFlow ({e}): install "
                          "cnbert's tf-cpu extra, or tf-gpu for NVIDIA GPUs (in a clone: `make install`, or "
                          "`pip install --no-build-isolation -e '.[tf-cpu]'`)") from e
    return tf


def load_tf_checkpoint(path) -> dict[str, np.ndarray]:
    """Every variable of a TF checkpoint as numpy arrays. `path` is the checkpoint prefix
    (".../bert_model.ckpt", as Google ships it) or a directory holding exactly one checkpoint.
    Imports TensorFlow here, never at module import."""
    prefix = tf_checkpoint_prefix(path)
    tf = _tensorflow(prefix)
    with reading_weights(prefix):
        reader = tf.train.load_checkpoint(str(prefix))
        return {name: reader.get_tensor(name) for name in sorted(reader.get_variable_to_shape_map())}


def list_tf_variables(path) -> dict[str, tuple[int, ...]]:
    """Names and shapes of a TF checkpoint's variables, read from its index without loading values.
    Imports TensorFlow here, never at module import."""
    prefix = tf_checkpoint_prefix(path)
    tf = _tensorflow(prefix)
    with reading_weights(prefix):
        return {name: tuple(shape) for name, shape in tf.train.list_variables(str(prefix))}


def tf_checkpoint_prefix(path) -> Path:
    """The prefix of the TF checkpoint at `path` (a prefix, its ".index" file, or a directory)."""
    path = Path(path)
    if path.is_dir():
        indexes = sorted(path.glob("*.index"))
        if len(indexes) != 1:
            raise CheckpointError(path, "", f"expected one TF checkpoint (*.index) in the directory, found "
                                            f"{[p.name for p in indexes]}"
                                            + (": pass the prefix of the one to load (e.g. "
                                               f"{indexes[-1].with_suffix('')})" if indexes else ""))
        return indexes[0].with_suffix("")
    if path.suffix == ".index":
        path = path.with_suffix("")
    if not path.with_name(path.name + ".index").exists():
        raise CheckpointError(path, "", "no TF checkpoint here (its .index file is missing)")
    return path


def _hf_name(tf_name: str) -> tuple[str, bool] | None:
    """(Hugging Face name, whether to transpose), or None for a name outside the BERT layout."""
    if not tf_name.startswith(_TF_PREFIX):
        return None
    *path, leaf = _TF_LAYER.sub(r"layer.\1", tf_name[len(_TF_PREFIX):]).split("/")
    transpose = False
    if leaf.endswith("_embeddings"):
        path, leaf = path + [leaf], "weight"
    elif leaf == "kernel":
        leaf, transpose = "weight", True
    elif leaf in ("gamma", "beta") and path and path[-1] == "LayerNorm":
        leaf = "weight" if leaf == "gamma" else "bias"
    elif leaf != "bias" or (path and path[-1] == "LayerNorm"):
        return None
    name = ".".join(path + [leaf])
    return (name, transpose) if BERT_NAME.fullmatch(name) else None


def _layout_hint(names: list[str]) -> str:
    albert_marks = ("layer_shared", "transformer/group_", "embedding_hidden_mapping_in", "word_embeddings_2")
    if any(mark in n for n in names for mark in albert_marks):
        return "; this looks like an ALBERT checkpoint: load it with the ALBERT model"
    if any(n.startswith("bert_model/") for n in names):
        return ("; this looks like a siBert checkpoint (ewrfcas/SiBert_tensorflow): convert it with "
                "cnbert.checkpoints.convert_tf_variables, which reads every supported layout")
    return ""
