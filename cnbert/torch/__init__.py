"""PyTorch BERT and ALBERT for cnbert: the encoders (Hugging Face BertModel / AlbertModel names, and
brightmart albert_zh's factorized layout), reading-comprehension, classification and tagging heads and losses,
building the model a task and config call for, strict checkpoint loading and HF-compatible saving."""
from cnbert.torch.attention import (ATTENTION_FUNCTIONS, attention_function, eager_attention, fused_attention,
                                    sdpa_attention)
from cnbert.torch.albert import (AlbertForCJRC, AlbertForSequenceClassification, AlbertForSpanExtraction,
                                 AlbertForTokenClassification, AlbertModel)
from cnbert.torch.checkpoint import (
    TASK_HEADS,
    LoadReport,
    from_pretrained,
    load_for_task,
    load_pretrained,
    model_class_for_task,
    model_for_task,
    read_state_dict,
    save_pretrained,
)
from cnbert.torch.heads import (
    ANSWER_CLASSES,
    IGNORE_INDEX,
    BertForCJRC,
    BertForSequenceClassification,
    BertForSpanExtraction,
    BertForTokenClassification,
    classification_loss,
    cjrc_loss,
    span_loss,
    token_classification_loss,
)
from cnbert.torch.modeling import BertModel, EncoderOutput, init_bert_weights, set_gradient_checkpointing

__all__ = [
    "ATTENTION_FUNCTIONS", "attention_function", "eager_attention", "fused_attention", "sdpa_attention", "LoadReport",
    "from_pretrained", "load_pretrained", "read_state_dict", "save_pretrained", "ANSWER_CLASSES", "IGNORE_INDEX",
    "BertForCJRC", "BertForSequenceClassification", "BertForSpanExtraction", "BertForTokenClassification",
    "classification_loss", "cjrc_loss", "span_loss", "token_classification_loss", "BertModel", "EncoderOutput",
    "init_bert_weights", "AlbertForCJRC", "AlbertForSequenceClassification", "AlbertForSpanExtraction",
    "AlbertForTokenClassification", "AlbertModel", "TASK_HEADS",
    "load_for_task", "model_class_for_task", "model_for_task", "set_gradient_checkpointing",
]
