"""PyTorch BERT for cnbert: the encoder (Hugging Face BertModel names), reading-comprehension heads
and losses, strict checkpoint loading and HF-compatible saving."""
from cnbert.torch.attention import ATTENTION_FUNCTIONS, attention_function, eager_attention, sdpa_attention
from cnbert.torch.checkpoint import LoadReport, from_pretrained, load_pretrained, read_state_dict, save_pretrained
from cnbert.torch.heads import (
    ANSWER_CLASSES,
    IGNORE_INDEX,
    BertForCJRC,
    BertForSpanExtraction,
    cjrc_loss,
    span_loss,
)
from cnbert.torch.modeling import BertModel, EncoderOutput, init_bert_weights

__all__ = [
    "ATTENTION_FUNCTIONS", "attention_function", "eager_attention", "sdpa_attention", "LoadReport",
    "from_pretrained", "load_pretrained", "read_state_dict", "save_pretrained", "ANSWER_CLASSES", "IGNORE_INDEX",
    "BertForCJRC", "BertForSpanExtraction", "cjrc_loss", "span_loss", "BertModel",
    "EncoderOutput", "init_bert_weights",
]
