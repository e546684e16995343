"""The BERT encoder in PyTorch, with Hugging Face `BertModel` parameter names and shapes, so HF
checkpoints load without conversion (module names such as `LayerNorm` and `self` follow HF).
cnbert.torch.albert builds ALBERT from these parts."""
from __future__ import annotations

import dataclasses
import functools

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from cnbert.config import GELU_FORMS, AlbertConfig, BertConfig, ConfigError
from cnbert.torch.attention import attention_function

def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """x·σ(1.702x): blocksparse's fast_gelu (siBert's FFN activation), transformers' "quick_gelu"."""
    return x * torch.sigmoid(1.702 * x)


def activation_function(hidden_act: str):
    """The FFN activation a config's hidden_act names (config.GELU_FORMS gives each GELU's form)."""
    if hidden_act == "relu":
        return F.relu
    form = GELU_FORMS[hidden_act]
    return quick_gelu if form == "sigmoid" else functools.partial(F.gelu, approximate=form)


def fused_gelu_form(config: BertConfig) -> str | None:
    """The `approximate` form in which the FFN fuses its bias add into the GELU
    (cnbert.kernels.bias_gelu): only with attention="fused" (the explicit opt-in to cnbert's
    kernels) and a GELU-family hidden_act; None otherwise."""
    return config.gelu_form if config.attention == "fused" else None


def dense_activation(dense: nn.Linear, activation, fused_form: str | None, hidden_states):
    """activation(dense(hidden_states)), the FFN's first half (BERT's intermediate, ALBERT's ffn).

    With a fused_form (see fused_gelu_form) and the compiled kernels running on this tensor's
    device and dtype (cnbert.kernels.runs_on), the bias add and the GELU are one kernel: one pass
    over the [tokens, intermediate] activations instead of two, keeping only the matmul output and
    the bias for backward. Otherwise the eager modules run, never the kernels' pure-torch reference
    fallback, which would keep several activation-sized float32 tensors for backward. The choice
    reads only tensor metadata and import-time constants: no graph break under torch.compile."""
    if fused_form is not None:
        from cnbert import kernels  # imported on first use: eager / sdpa models never load the extension

        if kernels.runs_on(hidden_states):
            return kernels.bias_gelu(F.linear(hidden_states, dense.weight), dense.bias, approximate=fused_form)
    return activation(dense(hidden_states))


@dataclasses.dataclass
class EncoderOutput:
    """sequence_output: [batch, seq, hidden]; pooled_output: [batch, hidden] (None without a pooler)."""

    sequence_output: torch.Tensor
    pooled_output: torch.Tensor | None


def init_bert_weights(module: nn.Module, initializer_range: float) -> None:
    """Hugging Face / Google initialisation: normal(0, initializer_range) for Linear and Embedding
    weights (padding row zeroed), zero biases, LayerNorm ones / zeros."""
    with torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, nn.Linear):
                sub.weight.normal_(0.0, initializer_range)
                if sub.bias is not None:
                    sub.bias.zero_()
            elif isinstance(sub, nn.Embedding):
                sub.weight.normal_(0.0, initializer_range)
                if sub.padding_idx is not None:
                    sub.weight[sub.padding_idx].zero_()
            elif isinstance(sub, nn.LayerNorm):
                sub.weight.fill_(1.0)
                sub.bias.zero_()


class BertEmbeddings(nn.Module):
    """Word + token-type + position embeddings, LayerNorm, dropout. `width` (default hidden_size) is
    the embedding width, `word_width` (default `width`) that of the word table alone; subclasses that
    project the words to `width` override `embed_words`."""

    def __init__(self, config: BertConfig, width: int | None = None, word_width: int | None = None):
        super().__init__()
        width = config.hidden_size if width is None else width
        self.max_positions = config.max_position_embeddings
        self.word_embeddings = nn.Embedding(config.vocab_size, width if word_width is None else word_width,
                                            padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, width)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, width)
        self.LayerNorm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def embed_words(self, input_ids):
        return self.word_embeddings(input_ids)

    def forward(self, input_ids, token_type_ids=None, position_ids=None):
        seq_len = input_ids.shape[1]
        if seq_len > self.max_positions:
            raise ValueError(f"sequence length {seq_len} exceeds max_position_embeddings {self.max_positions}")
        if position_ids is None:
            position_ids = torch.arange(seq_len, device=input_ids.device)[None, :]
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        # Same summation order as transformers, so fp32 results agree to rounding.
        embeddings = self.embed_words(input_ids) + self.token_type_embeddings(token_type_ids)
        embeddings = embeddings + self.position_embeddings(position_ids)
        return self.dropout(self.LayerNorm(embeddings))


class BertSelfAttention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_size = config.head_size
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout_p = config.attention_probs_dropout_prob
        self.attend = attention_function(config.attention)

    def forward(self, hidden_states, key_padding_mask):
        batch, seq_len, _ = hidden_states.shape

        def heads(x):
            return x.view(batch, seq_len, self.num_heads, self.head_size).transpose(1, 2)

        context = self.attend(heads(self.query(hidden_states)), heads(self.key(hidden_states)),
                              heads(self.value(hidden_states)), key_padding_mask,
                              dropout_p=self.dropout_p if self.training else 0.0, scale=self.head_size ** -0.5)
        return context.transpose(1, 2).reshape(batch, seq_len, self.num_heads * self.head_size)


class BertSelfOutput(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states, residual):
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + residual)


class BertAttention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertSelfOutput(config)

    def forward(self, hidden_states, key_padding_mask):
        return self.output(self.self(hidden_states, key_padding_mask), hidden_states)


class BertIntermediate(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.activation = activation_function(config.hidden_act)
        # attention="fused" also fuses the bias add into the GELU where the kernels run (dense_activation).
        self.fused_gelu = fused_gelu_form(config)

    def forward(self, hidden_states):
        return dense_activation(self.dense, self.activation, self.fused_gelu, hidden_states)


class BertOutput(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states, residual):
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + residual)


class BertLayer(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)

    def forward(self, hidden_states, key_padding_mask):
        attended = self.attention(hidden_states, key_padding_mask)
        return self.output(self.intermediate(attended), attended)


class LayerStack(nn.Module):
    """Base of the encoders' layer loops (BERT's and both ALBERT layouts'). With
    gradient_checkpointing (see set_gradient_checkpointing), a training forward pass keeps only each
    layer's input; the backward pass recomputes the layer's activations from it."""

    gradient_checkpointing = False

    def run_layer(self, layer: nn.Module, hidden_states, key_padding_mask):
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            # Non-reentrant checkpointing restores the RNG state (preserve_rng_state=True by default)
            # before recomputing, so dropout draws the same masks twice and the gradients are exact.
            return checkpoint(layer, hidden_states, key_padding_mask, use_reentrant=False)
        return layer(hidden_states, key_padding_mask)


class BertEncoder(LayerStack):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))

    def forward(self, hidden_states, key_padding_mask):
        for layer in self.layer:
            hidden_states = self.run_layer(layer, hidden_states, key_padding_mask)
        return hidden_states


def set_gradient_checkpointing(model: nn.Module, enabled: bool) -> None:
    """Recompute each encoder layer in the backward pass while training (less activation memory,
    about one more forward pass of compute), or stop doing so. Applies to every cnbert encoder
    (BERT or ALBERT) inside `model`; as cnbert.tf.set_gradient_checkpointing does for Keras."""
    stacks = [module for module in model.modules() if isinstance(module, LayerStack)]
    if enabled and not stacks:
        raise ValueError(f"gradient checkpointing needs a cnbert BERT or ALBERT encoder; "
                         f"{type(model).__name__} has none")
    for stack in stacks:
        stack.gradient_checkpointing = enabled


class BertPooler(nn.Module):
    """tanh(dense(hidden state of [CLS])), pretrained with next-sentence prediction."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, sequence_output):
        return torch.tanh(self.dense(sequence_output[:, 0]))


class BertModel(nn.Module):
    """The encoder; its state dict has exactly Hugging Face BertModel's names and shapes."""

    base_model_prefix = "bert"  # its name inside task models, as in transformers

    def __init__(self, config: BertConfig, add_pooling_layer: bool = True):
        if isinstance(config, AlbertConfig):
            raise ConfigError(f"an ALBERT config ({config.model_type}) cannot build the BERT model: use "
                              "cnbert.torch.AlbertModel, or cnbert.torch.model_for_task for a task model")
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        init_bert_weights(self, config.initializer_range)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None) -> EncoderOutput:
        """input_ids, attention_mask (1 = token, 0 = padding), token_type_ids (default zeros) and
        position_ids (default 0..seq-1): [batch, seq] integer tensors."""
        key_padding_mask = key_padding_mask_of(input_ids, attention_mask, token_type_ids)
        hidden = self.embeddings(input_ids, token_type_ids, position_ids)
        sequence_output = self.encoder(hidden, key_padding_mask)
        pooled = self.pooler(sequence_output) if self.pooler is not None else None
        return EncoderOutput(sequence_output, pooled)


def key_padding_mask_of(input_ids, attention_mask, token_type_ids) -> torch.Tensor | None:
    """Check an encoder's inputs and turn attention_mask (1 = token) into the bool key-padding mask."""
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be [batch, seq], got shape {tuple(input_ids.shape)}")
    for name, tensor in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids)):
        if tensor is not None and tensor.shape != input_ids.shape:
            raise ValueError(f"{name} has shape {tuple(tensor.shape)} but input_ids has {tuple(input_ids.shape)}")
    return None if attention_mask is None else attention_mask.bool()
