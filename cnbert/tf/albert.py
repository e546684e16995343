"""ALBERT as Keras 3 layers, mirroring cnbert.torch.albert in both checkpoint layouts
(cnbert.config.ALBERT_EMBEDDING_LAYOUTS):

- "albert" (Google ALBERT): E-wide embeddings, embedding_hidden_mapping_in to H, then
  num_hidden_layers applications of num_hidden_groups groups of inner_group_num layers.
- "factorized_word" (brightmart albert_zh): the [V, E] word table projected to H by
  word_embeddings_2, H-wide position / token-type tables, and one BERT layer, layer_shared, applied
  num_hidden_layers times.

Variable paths are the layout's TF1 checkpoint names (cnbert.checkpoints.albert_layout):
bert/encoder/transformer/group_0/inner_group_0/attention_1/self/query/kernel,
bert/encoder/layer_shared/output/LayerNorm/gamma, ...; one exception: brightmart's bare projection
matrix bert/embeddings/word_embeddings_2 is the kernel of a bias-free dense layer here,
bert/embeddings/word_embeddings_2/kernel, so that it follows set_precision as PyTorch's
nn.Linear(bias=False) follows autocast. Canonical names are the PyTorch model's state-dict names
(Hugging Face AlbertModel's in the "albert" layout), under "albert." in task models.

A shared layer runs several times in one step: each application draws its dropout masks from its
own seed (cnbert.tf.modeling.application_seed), as the PyTorch layer draws fresh masks per call, and
gradient checkpointing recomputes each application on its own.

Precision as in cnbert.tf.modeling: the dense layers, word_embeddings_2 included, follow set_precision.
"""
from __future__ import annotations

import keras
import tensorflow as tf

from cnbert.checkpoints import (ALBERT_ENCODER_PREFIX, ALBERT_PRETRAINING_HEAD_PREFIXES, albert_architecture,
                                albert_tf_names)
from cnbert.config import AlbertConfig, ConfigError
from cnbert.tf.heads import (BertForCJRC, BertForSequenceClassification, BertForSpanExtraction,
                             BertForTokenClassification)
from cnbert.tf.modeling import (
    SITES_PER_LAYER,
    BertEmbeddings,
    BertLayer,
    BertModel,
    BertSelfAttention,
    LayerStack,
    Linear,
    application_seed,
    dropout,
    layer_norm,
)


class FactorizedWordEmbeddings(BertEmbeddings):
    """brightmart albert_zh embeddings: the [V, E] word table times word_embeddings_2 [E, H] (no
    bias), plus H-wide token-type and position embeddings, then the H-wide LayerNorm."""

    def __init__(self, config: AlbertConfig):
        super().__init__(config, word_width=config.embedding_size)
        self.word_embeddings_2 = Linear(self.width, config.initializer_range, use_bias=False,
                                        name="word_embeddings_2")

    def build(self, input_shape=None):
        super().build(input_shape)
        self.word_embeddings_2.build((None, None, self.word_width))

    def embed_words(self, input_ids):
        # in half precision under bf16 / fp16, as torch autocast runs the projection; the sum with
        # the float32 tables is float32 there too
        return tf.cast(self.word_embeddings_2(super().embed_words(input_ids)), tf.float32)


class AlbertLayer(keras.layers.Layer):
    """One Google ALBERT layer, inner_group_{index}: attention_1/self/{query,key,value},
    attention_1/output/dense, LayerNorm, ffn_1/intermediate/dense, ffn_1/intermediate/output/dense,
    LayerNorm_1 (post-LayerNorm, like BERT's layer)."""

    def __init__(self, config: AlbertConfig, index: int, **kwargs):
        super().__init__(name=f"inner_group_{index}", dtype="float32", **kwargs)
        self.config = config
        site = 1 + SITES_PER_LAYER * index
        self.attention = BertSelfAttention(config, site)
        self.attention_dense = Linear(config.hidden_size, config.initializer_range, name="dense")
        self.attention_norm = layer_norm(config)
        self.ffn = Linear(config.intermediate_size, config.initializer_range,
                          activation=config.hidden_act, name="dense")
        self.ffn_output = Linear(config.hidden_size, config.initializer_range, name="dense")
        self.output_norm = layer_norm(config, "LayerNorm_1")
        self.attention_site, self.ffn_site = site + 1, site + 2

    def build(self, input_shape):
        # The name scopes give Google's paths to parts that no layer of their own groups.
        with keras.name_scope("attention_1"):
            self.attention.build(input_shape)
            with keras.name_scope("output"):
                self.attention_dense.build(input_shape)
        self.attention_norm.build(input_shape)
        with keras.name_scope("ffn_1"), keras.name_scope("intermediate"):
            self.ffn.build(input_shape)
            with keras.name_scope("output"):
                self.ffn_output.build((None, None, self.config.intermediate_size))
        self.output_norm.build(input_shape)

    def call(self, hidden_states, key_mask, seed=None):
        rate = self.config.hidden_dropout_prob
        context = self.attention(hidden_states, key_mask, seed)
        projected = dropout(self.attention_dense(context), rate, seed, self.attention_site)
        attended = self.attention_norm(tf.cast(projected, hidden_states.dtype) + hidden_states)
        # Google ALBERT drops out the FFN output before the residual (as cnbert.torch.albert does).
        ffn_output = dropout(self.ffn_output(self.ffn(attended)), rate, seed, self.ffn_site)
        return self.output_norm(tf.cast(ffn_output, attended.dtype) + attended)


class AlbertLayerGroup(keras.layers.Layer):
    """group_{index}: inner_group_num layers with their own weights, run in order."""

    def __init__(self, config: AlbertConfig, index: int, **kwargs):
        super().__init__(name=f"group_{index}", dtype="float32", **kwargs)
        self.albert_layers = [AlbertLayer(config, i) for i in range(config.inner_group_num)]

    def build(self, input_shape):
        for layer in self.albert_layers:
            layer.build(input_shape)

    def call(self, hidden_states, key_mask, seed=None):
        for layer in self.albert_layers:
            hidden_states = layer(hidden_states, key_mask, seed)
        return hidden_states


class AlbertTransformer(LayerStack):
    """Maps the E-wide embeddings to H, then runs num_hidden_layers applications of the groups."""

    def __init__(self, config: AlbertConfig, gradient_checkpointing: bool = False):
        super().__init__(gradient_checkpointing)
        self.config = config
        self.embedding_hidden_mapping_in = Linear(config.hidden_size, config.initializer_range,
                                                  name="embedding_hidden_mapping_in")
        self.groups = [AlbertLayerGroup(config, g) for g in range(config.num_hidden_groups)]

    def build(self, input_shape):
        self.embedding_hidden_mapping_in.build(input_shape)
        with keras.name_scope("transformer"):
            for group in self.groups:
                group.build((None, None, self.config.hidden_size))

    def call(self, embeddings, key_mask, seed=None, training=False):
        hidden_states = self.embedding_hidden_mapping_in(embeddings)
        for i in range(self.config.num_hidden_layers):
            group = self.groups[self.config.group_of_layer(i)]
            hidden_states = self.run_layer(group, hidden_states, key_mask, application_seed(seed, i), training)
        return hidden_states


class SharedLayerEncoder(LayerStack):
    """brightmart albert_zh: one BERT layer, layer_shared, applied num_hidden_layers times."""

    def __init__(self, config: AlbertConfig, gradient_checkpointing: bool = False):
        super().__init__(gradient_checkpointing)
        self.num_layers = config.num_hidden_layers
        self.layer_shared = BertLayer(config, 0, name="layer_shared")

    def build(self, input_shape):
        self.layer_shared.build(input_shape)

    def call(self, hidden_states, key_mask, seed=None, training=False):
        for i in range(self.num_layers):
            hidden_states = self.run_layer(self.layer_shared, hidden_states, key_mask, application_seed(seed, i),
                                           training)
        return hidden_states


@keras.saving.register_keras_serializable(package="cnbert")
class AlbertModel(BertModel):
    """The ALBERT encoder for config.embedding_layout, named "bert" like Google's and brightmart's
    checkpoints; the same call and outputs as BertModel."""

    canonical_prefix = ALBERT_ENCODER_PREFIX
    pretraining_head_prefixes = ALBERT_PRETRAINING_HEAD_PREFIXES

    def __init__(self, config: AlbertConfig, add_pooling_layer: bool = True, gradient_checkpointing: bool = False):
        if not isinstance(config, AlbertConfig):
            raise ConfigError(f"AlbertModel needs an AlbertConfig, got {type(config).__name__}")
        super().__init__(config, add_pooling_layer, gradient_checkpointing)

    @staticmethod
    def make_embeddings(config: AlbertConfig) -> BertEmbeddings:
        if config.embedding_layout == "albert":
            return BertEmbeddings(config, width=config.embedding_size)
        return FactorizedWordEmbeddings(config)

    @staticmethod
    def make_encoder(config: AlbertConfig, gradient_checkpointing: bool) -> LayerStack:
        if config.embedding_layout == "albert":
            return AlbertTransformer(config, gradient_checkpointing)
        return SharedLayerEncoder(config, gradient_checkpointing)

    def canonical_names(self) -> dict[str, tuple[str, bool]]:
        names = {tf_name: (name, transposed) for name, (tf_name, transposed)
                 in albert_tf_names(self.config, add_pooling_layer=self.pooler is not None).items()}
        if isinstance(self.embeddings, FactorizedWordEmbeddings):  # the one path that is not the TF1 name
            projection = self.embeddings.word_embeddings_2.kernel
            names[projection.path] = names.pop(projection.path.removesuffix("/kernel"))
        return names

    @property
    def hf_architecture(self) -> str:
        return albert_architecture(self.config.embedding_layout)


class _OnAlbertEncoder:
    """Mixed in before a BERT task model: the same heads on AlbertModel, saved under the
    architecture name cnbert.checkpoints.albert_architecture gives (as cnbert.torch.albert's)."""

    encoder_class = AlbertModel
    head_name = ""
    factorized_head_name = ""

    @property
    def hf_architecture(self) -> str:
        return albert_architecture(self.config.embedding_layout, self.head_name, self.factorized_head_name)


@keras.saving.register_keras_serializable(package="cnbert")
class AlbertForSpanExtraction(_OnAlbertEncoder, BertForSpanExtraction):
    head_name, factorized_head_name = "ForQuestionAnswering", "ForSpanExtraction"


@keras.saving.register_keras_serializable(package="cnbert")
class AlbertForCJRC(_OnAlbertEncoder, BertForCJRC):
    head_name = "ForCJRC"


@keras.saving.register_keras_serializable(package="cnbert")
class AlbertForSequenceClassification(_OnAlbertEncoder, BertForSequenceClassification):
    head_name = "ForSequenceClassification"


@keras.saving.register_keras_serializable(package="cnbert")
class AlbertForTokenClassification(_OnAlbertEncoder, BertForTokenClassification):
    head_name = "ForTokenClassification"
