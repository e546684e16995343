"""ALBERT in PyTorch, in both checkpoint layouts users bring (cnbert.config.ALBERT_EMBEDDING_LAYOUTS):

- "albert" (Google ALBERT): state-dict names and shapes are exactly Hugging Face AlbertModel's, so
  HF directories load unchanged and cnbert's saved directories load in transformers.
- "factorized_word" (brightmart albert_zh, which the original list's albert_large results used):
  cnbert's own names (cnbert.checkpoints.albert_layout), BERT's parts with one shared layer.

The reading-comprehension heads are cnbert.torch.heads' own, on top of either encoder.
"""
from __future__ import annotations

import torch
from torch import nn

from cnbert.checkpoints.albert_layout import ALBERT_PRETRAINING_HEAD_PREFIXES, albert_architecture
from cnbert.config import AlbertConfig, ConfigError
from cnbert.torch.heads import (BertForCJRC, BertForSequenceClassification, BertForSpanExtraction,
                                BertForTokenClassification)
from cnbert.torch.modeling import (
    BertEmbeddings,
    BertLayer,
    BertPooler,
    BertSelfAttention,
    EncoderOutput,
    LayerStack,
    dense_activation,
    activation_function,
    fused_gelu_form,
    init_bert_weights,
    key_padding_mask_of,
)

class FactorizedWordEmbeddings(BertEmbeddings):
    """brightmart albert_zh embeddings: the [V, E] word table, projected to H by `word_embeddings_2`
    (no bias), plus H-wide token-type and position embeddings, then the H-wide LayerNorm."""

    def __init__(self, config: AlbertConfig):
        super().__init__(config, word_width=config.embedding_size)
        self.word_embeddings_2 = nn.Linear(config.embedding_size, config.hidden_size, bias=False)

    def embed_words(self, input_ids):
        return self.word_embeddings_2(self.word_embeddings(input_ids))


class SharedLayerEncoder(LayerStack):
    """brightmart albert_zh encoder: one BERT layer, `layer_shared`, applied num_hidden_layers times
    (with gradient checkpointing, each application is recomputed on its own)."""

    def __init__(self, config: AlbertConfig):
        super().__init__()
        self.num_layers = config.num_hidden_layers
        self.layer_shared = BertLayer(config)

    def forward(self, hidden_states, key_padding_mask):
        for _ in range(self.num_layers):
            hidden_states = self.run_layer(self.layer_shared, hidden_states, key_padding_mask)
        return hidden_states


class AlbertAttention(BertSelfAttention):
    """Self-attention with its output projection and post-LayerNorm in one module, as HF names them:
    attention.{query,key,value,dense,LayerNorm}."""

    def __init__(self, config: AlbertConfig):
        super().__init__(config)
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.output_dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states, key_padding_mask):
        context = super().forward(hidden_states, key_padding_mask)
        return self.LayerNorm(self.output_dropout(self.dense(context)) + hidden_states)


class AlbertLayer(nn.Module):
    def __init__(self, config: AlbertConfig):
        super().__init__()
        self.full_layer_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = AlbertAttention(config)
        self.ffn = nn.Linear(config.hidden_size, config.intermediate_size)
        self.ffn_output = nn.Linear(config.intermediate_size, config.hidden_size)
        self.activation = activation_function(config.hidden_act)
        # attention="fused" also fuses the bias add into the GELU where the kernels run, as in BERT.
        self.fused_gelu = fused_gelu_form(config)
        # Google ALBERT drops out the FFN output before the residual (attention_ffn_block);
        # transformers leaves it out. Both agree outside training.
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states, key_padding_mask):
        attended = self.attention(hidden_states, key_padding_mask)
        ffn_output = self.ffn_output(dense_activation(self.ffn, self.activation, self.fused_gelu, attended))
        return self.full_layer_layer_norm(self.dropout(ffn_output) + attended)


class AlbertLayerGroup(nn.Module):
    def __init__(self, config: AlbertConfig):
        super().__init__()
        self.albert_layers = nn.ModuleList(AlbertLayer(config) for _ in range(config.inner_group_num))

    def forward(self, hidden_states, key_padding_mask):
        for layer in self.albert_layers:
            hidden_states = layer(hidden_states, key_padding_mask)
        return hidden_states


class AlbertTransformer(LayerStack):
    """Maps the E-wide embeddings to H, then runs num_hidden_layers layers drawn from the groups
    (with gradient checkpointing, each of those applications is recomputed on its own)."""

    def __init__(self, config: AlbertConfig):
        super().__init__()
        self.config = config
        self.embedding_hidden_mapping_in = nn.Linear(config.embedding_size, config.hidden_size)
        self.albert_layer_groups = nn.ModuleList(AlbertLayerGroup(config) for _ in range(config.num_hidden_groups))

    def forward(self, embeddings, key_padding_mask):
        # Under autocast the projection comes out in half precision; back to the embeddings' dtype
        # (LayerNorm's float32), so the residual stream stays float32 as in BERT and the TF model.
        hidden_states = self.embedding_hidden_mapping_in(embeddings).to(embeddings.dtype)
        for i in range(self.config.num_hidden_layers):
            group = self.albert_layer_groups[self.config.group_of_layer(i)]
            hidden_states = self.run_layer(group, hidden_states, key_padding_mask)
        return hidden_states


class AlbertPooler(nn.Linear):
    """tanh(Linear([CLS] hidden state)); a bare Linear named `pooler`, as in HF AlbertModel."""

    def __init__(self, config: AlbertConfig):
        super().__init__(config.hidden_size, config.hidden_size)

    def forward(self, sequence_output):
        return torch.tanh(super().forward(sequence_output[:, 0]))


class AlbertModel(nn.Module):
    """The ALBERT encoder for config.embedding_layout; same inputs and EncoderOutput as BertModel."""

    base_model_prefix = "albert"
    pretraining_head_prefixes = ALBERT_PRETRAINING_HEAD_PREFIXES

    def __init__(self, config: AlbertConfig, add_pooling_layer: bool = True):
        if not isinstance(config, AlbertConfig):
            raise ConfigError(f"AlbertModel needs an AlbertConfig, got {type(config).__name__}")
        super().__init__()
        self.config = config
        if config.embedding_layout == "albert":
            self.embeddings = BertEmbeddings(config, width=config.embedding_size)
            self.encoder = AlbertTransformer(config)
            self.pooler = AlbertPooler(config) if add_pooling_layer else None
        else:
            self.embeddings = FactorizedWordEmbeddings(config)
            self.encoder = SharedLayerEncoder(config)
            self.pooler = BertPooler(config) if add_pooling_layer else None
        init_bert_weights(self, config.initializer_range)

    @property
    def hf_architecture(self) -> str:
        return albert_architecture(self.config.embedding_layout)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None) -> EncoderOutput:
        """As BertModel.forward: [batch, seq] integer tensors; attention_mask 1 = token, 0 = padding."""
        key_padding_mask = key_padding_mask_of(input_ids, attention_mask, token_type_ids)
        hidden = self.embeddings(input_ids, token_type_ids, position_ids)
        sequence_output = self.encoder(hidden, key_padding_mask)
        pooled = self.pooler(sequence_output) if self.pooler is not None else None
        return EncoderOutput(sequence_output, pooled)


class _OnAlbertEncoder:
    """Mixed in before a BERT task model: the same heads on an ALBERT encoder (with a pooler when the
    head needs one), under the name transformers' Albert* models give it.

    hf_architecture (config.json's "architectures") follows cnbert.checkpoints.albert_architecture.
    """

    base_model_prefix = "albert"
    pretraining_head_prefixes = ALBERT_PRETRAINING_HEAD_PREFIXES
    head_name = ""
    factorized_head_name = ""

    @staticmethod
    def build_encoder(config: AlbertConfig, add_pooling_layer: bool = False) -> nn.Module:
        return AlbertModel(config, add_pooling_layer=add_pooling_layer)

    @property
    def hf_architecture(self) -> str:
        return albert_architecture(self.config.embedding_layout, self.head_name, self.factorized_head_name)


class AlbertForSpanExtraction(_OnAlbertEncoder, BertForSpanExtraction):
    """BertForSpanExtraction's head on ALBERT; in the "albert" layout its state dict is that of
    transformers' AlbertForQuestionAnswering."""

    head_name, factorized_head_name = "ForQuestionAnswering", "ForSpanExtraction"


class AlbertForCJRC(_OnAlbertEncoder, BertForCJRC):
    """BertForCJRC's span and answer-class heads on ALBERT."""

    head_name = "ForCJRC"


class AlbertForSequenceClassification(_OnAlbertEncoder, BertForSequenceClassification):
    """BertForSequenceClassification's head on ALBERT's pooled output; in the "albert" layout its
    state dict is that of transformers' AlbertForSequenceClassification."""

    head_name = "ForSequenceClassification"


class AlbertForTokenClassification(_OnAlbertEncoder, BertForTokenClassification):
    """BertForTokenClassification's head on ALBERT; in the "albert" layout its state dict is that of
    transformers' AlbertForTokenClassification."""

    head_name = "ForTokenClassification"
