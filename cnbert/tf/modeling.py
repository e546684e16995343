"""The BERT encoder as Keras 3 layers (TensorFlow backend), mirroring cnbert.torch.modeling.

Variables are named like Google's TF checkpoints: a variable's path is its Google name
(bert/embeddings/word_embeddings,
bert/encoder/layer_0/attention/self/query/kernel, bert/encoder/layer_0/output/LayerNorm/gamma,
bert/pooler/dense/bias, ...), kernels [in, out]. cnbert.tf.checkpoint maps them to the canonical
(Hugging Face) names shared with the PyTorch model.

Precision follows PyTorch autocast: under bf16/fp16 only the dense layers (`Linear`) and the two
attention matmuls run in half precision; embeddings, LayerNorm, softmax, the residual stream and
the losses stay float32 (see set_precision). Every layer and model here is built with a float32
dtype policy, so a global Keras policy (keras.mixed_precision.set_global_policy) changes nothing:
set_precision alone chooses the dense layers' precision.

Dropout is stateless: a model called with training=True takes an integer `dropout_seed` [2] and
derives one seed per dropout site from it, so a recomputed layer (gradient checkpointing) draws
exactly the masks of the first pass. The masks depend on the seeds and on how the call is compiled:
XLA (tf.function(jit_compile=True)) draws different masks from eager and plain tf.function code for
the same seed (TensorFlow's stateless RNG does not match across the two), so a seeded run is
reproduced only with the same jit_compile setting (the Trainer turns XLA off for replicas on CPUs:
see Trainer.jit_compile).
"""
from __future__ import annotations

import contextlib

import keras
import numpy as np
import tensorflow as tf

from cnbert.checkpoints import ENCODER_PREFIX, PRETRAINING_HEAD_PREFIXES, bert_parameter_shapes, hf_to_google
from cnbert.config import GELU_FORMS, HIDDEN_ACTIVATIONS, BertConfig, config_from_dict
from cnbert.tf import ops

PRECISION_POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}

# Dropout sites are numbered so each draws its own stream from the step's seed.
_EMBEDDING_DROPOUT_SITE = 0
SITES_PER_LAYER = 3
CLASS_DROPOUT_SITE = 1_000_000
# A layer applied several times (ALBERT's shared layers) draws each application's masks from its own
# seed, folded in from the step's seed at _APPLICATION_SEED_BASE + application (see application_seed).
_APPLICATION_SEED_BASE = 2_000_000


def dropout(x, rate: float, seed, site: int):
    """Inverted dropout with a seed derived from (seed, site); identity when seed is None (inference)."""
    if seed is None or rate == 0.0:
        return x
    site_seed = tf.random.experimental.stateless_fold_in(seed, site)
    return tf.nn.experimental.stateless_dropout(x, rate=rate, seed=site_seed)


def application_seed(seed, application: int):
    """The dropout seed of one application of a shared layer (None in inference), so that its dropout
    sites draw fresh masks each time the layer runs, as PyTorch's do."""
    if seed is None:
        return None
    return tf.random.experimental.stateless_fold_in(seed, _APPLICATION_SEED_BASE + application)


class Linear(keras.layers.Layer):
    """x @ kernel + bias with Google's names (kernel [in, out], bias [out]) and optionally an
    activation named as a config's hidden_act: a GELU fused with the bias add (ops.bias_gelu, in the
    form config.GELU_FORMS gives), or "relu". use_bias=False: x @ kernel alone (no activation)."""

    def __init__(self, units: int, initializer_range: float, activation: str | None = None, use_bias: bool = True,
                 **kwargs):
        kwargs.setdefault("dtype", "float32")  # not the global policy: set_precision chooses
        super().__init__(**kwargs)
        if activation is not None and not use_bias:
            raise ValueError("a Linear with an activation needs its bias")
        if activation not in (None, *HIDDEN_ACTIVATIONS):
            raise ValueError(f"activation {activation!r} is not one of {HIDDEN_ACTIVATIONS}")
        self.units = units
        self.initializer_range = initializer_range
        self.activation = activation
        self.use_bias = use_bias

    def build(self, input_shape):
        self.kernel = self.add_weight(name="kernel", shape=(input_shape[-1], self.units),
                                      initializer=keras.initializers.RandomNormal(stddev=self.initializer_range))
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros")

    def call(self, x):
        y = keras.ops.matmul(x, self.kernel)
        if not self.use_bias:
            return y
        if self.activation is None:
            return y + self.bias
        if self.activation == "relu":
            return tf.nn.relu(y + self.bias)
        return ops.bias_gelu(y, self.bias, approximate=GELU_FORMS[self.activation])


def layer_norm(config: BertConfig, name: str = "LayerNorm") -> keras.layers.LayerNormalization:
    return keras.layers.LayerNormalization(epsilon=config.layer_norm_eps, name=name, dtype="float32")


class BertEmbeddings(keras.layers.Layer):
    """word + token type + position embeddings, LayerNorm, dropout (always float32). `width` (default
    hidden_size) is the embedding width, `word_width` (default `width`) that of the word table alone;
    subclasses that project the words to `width` override `embed_words`."""

    def __init__(self, config: BertConfig, width: int | None = None, word_width: int | None = None, **kwargs):
        super().__init__(name="embeddings", dtype="float32", **kwargs)
        self.config = config
        self.width = config.hidden_size if width is None else width
        self.word_width = self.width if word_width is None else word_width
        self.LayerNorm = layer_norm(config)

    def build(self, input_shape=None):
        c = self.config
        # One initializer per table: a Keras initializer fixes its seed when it is made, so a shared one
        # would give the three tables the same values (token id i and position i alike).
        def normal():
            return keras.initializers.RandomNormal(stddev=c.initializer_range)

        self.word_embeddings = self.add_weight(name="word_embeddings", shape=(c.vocab_size, self.word_width),
                                               initializer=normal())
        self.token_type_embeddings = self.add_weight(name="token_type_embeddings",
                                                     shape=(c.type_vocab_size, self.width), initializer=normal())
        self.position_embeddings = self.add_weight(name="position_embeddings",
                                                   shape=(c.max_position_embeddings, self.width),
                                                   initializer=normal())
        self.LayerNorm.build((None, None, self.width))

    def embed_words(self, input_ids):
        words = tf.gather(self.word_embeddings, input_ids)
        if self.config.pad_token_id is not None:
            # The padding row gets no gradient, as torch's Embedding(padding_idx=...) does.
            is_pad = tf.equal(input_ids, tf.cast(self.config.pad_token_id, input_ids.dtype))[..., None]
            words = tf.where(is_pad, tf.stop_gradient(words), words)
        return words

    def call(self, input_ids, token_type_ids, seed=None):
        seq_len = tf.shape(input_ids)[1]
        # Same summation order as the PyTorch model (and transformers).
        embeddings = self.embed_words(input_ids) + tf.gather(self.token_type_embeddings, token_type_ids)
        embeddings = embeddings + self.position_embeddings[None, :seq_len]
        return dropout(self.LayerNorm(embeddings), self.config.hidden_dropout_prob, seed, _EMBEDDING_DROPOUT_SITE)


class BertSelfAttention(keras.layers.Layer):
    def __init__(self, config: BertConfig, site: int, **kwargs):
        super().__init__(name="self", dtype="float32", **kwargs)
        self.config = config
        self.site = site
        self.query = Linear(config.hidden_size, config.initializer_range, name="query")
        self.key = Linear(config.hidden_size, config.initializer_range, name="key")
        self.value = Linear(config.hidden_size, config.initializer_range, name="value")

    def build(self, input_shape):
        for dense in (self.query, self.key, self.value):
            dense.build(input_shape)

    def call(self, hidden_states, key_mask, seed=None):
        """hidden_states [batch, seq, hidden]; key_mask: bool [batch, 1, 1, seq] (True = token) or None."""
        c = self.config
        batch, seq_len = tf.shape(hidden_states)[0], tf.shape(hidden_states)[1]

        def heads(x):
            return tf.transpose(tf.reshape(x, [batch, seq_len, c.num_attention_heads, c.head_size]), [0, 2, 1, 3])

        query, key, value = (heads(dense(hidden_states)) for dense in (self.query, self.key, self.value))
        # the query scaled first, as torch's sdpa and fused paths do: fp16 scores overflow only where
        # the scaled ones would
        scores = tf.matmul(query * tf.cast(c.head_size ** -0.5, query.dtype), key, transpose_b=True)
        probs = ops.softmax(scores, mask=key_mask)
        probs = dropout(probs, c.attention_probs_dropout_prob, seed, self.site)
        context = tf.matmul(tf.cast(probs, value.dtype), value)
        return tf.reshape(tf.transpose(context, [0, 2, 1, 3]), [batch, seq_len, c.hidden_size])


class BertResidualOutput(keras.layers.Layer):
    """LayerNorm(dropout(dense(x)) + residual), with the residual stream kept in float32 (as torch
    autocast promotes the sum); named "output" under both attention and layer."""

    def __init__(self, config: BertConfig, site: int, **kwargs):
        super().__init__(name="output", dtype="float32", **kwargs)
        self.config = config
        self.site = site
        self.dense = Linear(config.hidden_size, config.initializer_range, name="dense")
        self.LayerNorm = layer_norm(config)

    def build(self, input_shape):
        self.dense.build(input_shape)
        self.LayerNorm.build((None, None, self.config.hidden_size))

    def call(self, hidden_states, residual, seed=None):
        projected = dropout(self.dense(hidden_states), self.config.hidden_dropout_prob, seed, self.site)
        return self.LayerNorm(tf.cast(projected, residual.dtype) + residual)


class BertAttention(keras.layers.Layer):
    def __init__(self, config: BertConfig, site: int, **kwargs):
        super().__init__(name="attention", dtype="float32", **kwargs)
        self.self_attention = BertSelfAttention(config, site)
        self.self_output = BertResidualOutput(config, site + 1)

    def build(self, input_shape):
        self.self_attention.build(input_shape)
        self.self_output.build(input_shape)

    def call(self, hidden_states, key_mask, seed=None):
        return self.self_output(self.self_attention(hidden_states, key_mask, seed), hidden_states, seed)


class BertIntermediate(keras.layers.Layer):
    def __init__(self, config: BertConfig, **kwargs):
        super().__init__(name="intermediate", dtype="float32", **kwargs)
        self.dense = Linear(config.intermediate_size, config.initializer_range,
                            activation=config.hidden_act, name="dense")

    def build(self, input_shape):
        self.dense.build(input_shape)

    def call(self, hidden_states):
        return self.dense(hidden_states)


class BertLayer(keras.layers.Layer):
    """Post-LayerNorm attention and FFN; named layer_{index} unless `name` is given (ALBERT's
    layer_shared); its dropout sites are numbered from its index."""

    def __init__(self, config: BertConfig, index: int, name: str | None = None, **kwargs):
        super().__init__(name=name or f"layer_{index}", dtype="float32", **kwargs)
        self.config = config
        site = 1 + SITES_PER_LAYER * index
        self.attention = BertAttention(config, site)
        self.intermediate = BertIntermediate(config)
        self.ffn_output = BertResidualOutput(config, site + 2)

    def build(self, input_shape):
        self.attention.build(input_shape)
        self.intermediate.build(input_shape)
        self.ffn_output.build((None, None, self.config.intermediate_size))

    def call(self, hidden_states, key_mask, seed=None):
        attended = self.attention(hidden_states, key_mask, seed)
        return self.ffn_output(self.intermediate(attended), attended, seed)


class LayerStack(keras.layers.Layer):
    """An encoder (named "encoder") that runs its layers through run_layer. With
    gradient_checkpointing, each layer application's activations are recomputed in the backward pass
    (tf.recompute_grad) instead of kept: memory per layer drops to its input."""

    def __init__(self, gradient_checkpointing: bool = False, **kwargs):
        super().__init__(name="encoder", dtype="float32", **kwargs)
        self.gradient_checkpointing = gradient_checkpointing

    def run_layer(self, layer, hidden_states, key_mask, seed, training):
        if self.gradient_checkpointing and training:
            return tf.recompute_grad(lambda h: layer(h, key_mask, seed))(hidden_states)
        return layer(hidden_states, key_mask, seed)


class BertEncoder(LayerStack):
    """num_hidden_layers BERT layers, each with its own weights."""

    def __init__(self, config: BertConfig, gradient_checkpointing: bool = False, **kwargs):
        super().__init__(gradient_checkpointing, **kwargs)
        self.layers_ = [BertLayer(config, i) for i in range(config.num_hidden_layers)]

    def build(self, input_shape):
        for layer in self.layers_:
            layer.build(input_shape)

    def call(self, hidden_states, key_mask, seed=None, training=False):
        for layer in self.layers_:
            hidden_states = self.run_layer(layer, hidden_states, key_mask, seed, training)
        return hidden_states


class BertPooler(keras.layers.Layer):
    """tanh(dense(hidden state of [CLS]))."""

    def __init__(self, config: BertConfig, **kwargs):
        super().__init__(name="pooler", dtype="float32", **kwargs)
        self.dense = Linear(config.hidden_size, config.initializer_range, name="dense")

    def build(self, input_shape):
        self.dense.build(input_shape)

    def call(self, sequence_output):
        return tf.tanh(tf.cast(self.dense(sequence_output[:, 0]), tf.float32))


def _keep_mask(attention_mask) -> tf.Tensor:
    """True where attention_mask keeps a token: 1 (any non-zero) or True, as the torch model reads it."""
    mask = tf.convert_to_tensor(attention_mask)
    return mask if mask.dtype == tf.bool else tf.not_equal(mask, tf.zeros((), mask.dtype))


@keras.saving.register_keras_serializable(package="cnbert")
class BertModel(keras.Model):
    """The encoder, always named "bert", so its variable paths are exactly Google's names.

    call(input_ids, attention_mask=None, token_type_ids=None, training=False, dropout_seed=None)
    -> {"sequence_output": [batch, seq, hidden] float32, "pooled_output": [batch, hidden] float32
    (only with the pooler)}. attention_mask: 1 = token, 0 = padding (or True / False).

    get_config / from_config rebuild the architecture (the model config as a dict, the pooler,
    gradient checkpointing), so `model.save("m.keras")` and `keras.saving.load_model` work; the
    precision is not part of it (set_precision chooses it for a run).

    Subclasses (cnbert.tf.albert) change the parts through make_embeddings / make_encoder and
    their canonical names through canonical_names and canonical_prefix.
    """

    # The encoder's prefix in task models' canonical (state-dict) names, and the pretraining heads a
    # pretrained checkpoint may carry unused.
    canonical_prefix = ENCODER_PREFIX
    pretraining_head_prefixes = PRETRAINING_HEAD_PREFIXES

    def __init__(self, config: BertConfig, add_pooling_layer: bool = True, gradient_checkpointing: bool = False):
        super().__init__(name="bert", dtype="float32")
        self.config = config
        self.embeddings = self.make_embeddings(config)
        self.encoder = self.make_encoder(config, gradient_checkpointing)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        self.build()
        zero_padding_row(self)

    def get_config(self) -> dict:
        return {"config": self.config.to_dict(), "add_pooling_layer": self.pooler is not None,
                "gradient_checkpointing": self.encoder.gradient_checkpointing}

    @classmethod
    def from_config(cls, config: dict) -> "BertModel":
        return cls(**{**config, "config": config_from_dict(config["config"])})

    @staticmethod
    def make_embeddings(config: BertConfig) -> BertEmbeddings:
        return BertEmbeddings(config)

    @staticmethod
    def make_encoder(config: BertConfig, gradient_checkpointing: bool) -> LayerStack:
        return BertEncoder(config, gradient_checkpointing)

    def canonical_names(self) -> dict[str, tuple[str, bool]]:
        """Variable path -> (canonical name without canonical_prefix, whether the canonical array is
        the variable's transpose)."""
        names = {}
        for name in bert_parameter_shapes(self.config, add_pooling_layer=self.pooler is not None):
            (google_name,) = hf_to_google({name: np.zeros(0)})
            names[google_name] = (name, google_name.endswith("/kernel"))
        return names

    def build(self, input_shape=None):
        self.embeddings.build()
        self.encoder.build((None, None, self.embeddings.width))
        if self.pooler is not None:
            self.pooler.build((None, self.config.hidden_size))

    def call(self, input_ids, attention_mask=None, token_type_ids=None, training=False, dropout_seed=None):
        input_ids = tf.convert_to_tensor(input_ids)
        if input_ids.shape.rank != 2:
            raise ValueError(f"input_ids must be [batch, seq], got shape {input_ids.shape}")
        seq_len = input_ids.shape[1]
        if seq_len is not None and seq_len > self.config.max_position_embeddings:
            raise ValueError(f"sequence length {seq_len} exceeds max_position_embeddings "
                             f"{self.config.max_position_embeddings}")
        for name, tensor in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids)):
            if tensor is not None and not tf.convert_to_tensor(tensor).shape.is_compatible_with(input_ids.shape):
                raise ValueError(f"{name} has shape {tensor.shape} but input_ids has {input_ids.shape}")
        if token_type_ids is None:
            token_type_ids = tf.zeros_like(input_ids)
        key_mask = None if attention_mask is None else _keep_mask(attention_mask)[:, None, None, :]
        seed = self._dropout_seed(training, dropout_seed)
        hidden = self.embeddings(input_ids, token_type_ids, seed)
        sequence_output = self.encoder(hidden, key_mask, seed, training=training)
        outputs = {"sequence_output": sequence_output}
        if self.pooler is not None:
            outputs["pooled_output"] = self.pooler(sequence_output)
        return outputs

    def _dropout_seed(self, training, dropout_seed):
        if not training:
            return None
        if dropout_seed is not None:
            return tf.convert_to_tensor(dropout_seed)
        # A caller that does not manage seeds gets one from TF's global generator
        # (keras.utils.set_random_seed makes it reproducible).
        return tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int64)


def zero_padding_row(model: BertModel) -> None:
    """Fresh weights: the padding token's embedding starts at zero, as in the PyTorch model."""
    pad = model.config.pad_token_id
    if pad is not None:
        table = model.embeddings.word_embeddings
        table.assign(tf.tensor_scatter_nd_update(table.value, [[pad]], tf.zeros([1, table.shape[1]], table.dtype)))


def _dense_layers(model: keras.Model) -> list:
    """The layers whose compute dtype set_precision chooses: the encoder's Linear layers. A task
    head stays float32, as cnbert.torch.heads.float32_head keeps it (bf16 logits would tie)."""
    heads = getattr(model, "head_prefixes", ())
    return [layer for layer in model._flatten_layers(include_self=False, recursive=True)
            if isinstance(layer, Linear) and layer.name + "." not in heads]


def set_precision(model: keras.Model, precision: str) -> None:
    """Run the model's dense layers in `precision` ("fp32", "bf16", "fp16") through Keras
    mixed-precision policies (variables stay float32); everything else stays float32, as every
    layer is built with a float32 policy whatever Keras's global policy is."""
    try:
        policy = PRECISION_POLICIES[precision]
    except KeyError:
        raise ValueError(f"precision must be one of {', '.join(PRECISION_POLICIES)}, got {precision!r}") from None
    for layer in _dense_layers(model):
        layer.dtype_policy = policy


@contextlib.contextmanager
def precision_scope(model: keras.Model, precision: str):
    """set_precision(model, precision) inside a with block; the dense layers' previous policies
    come back after it."""
    layers = _dense_layers(model)
    before = [layer.dtype_policy for layer in layers]
    set_precision(model, precision)
    try:
        yield model
    finally:
        for layer, policy in zip(layers, before):
            layer.dtype_policy = policy


def set_gradient_checkpointing(model: keras.Model, enabled: bool) -> None:
    """Recompute each encoder layer in the backward pass (applies to functions traced afterwards)."""
    for layer in model._flatten_layers(include_self=True, recursive=True):
        if isinstance(layer, LayerStack):
            layer.gradient_checkpointing = enabled
