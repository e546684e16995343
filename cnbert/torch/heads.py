"""Task models for reading comprehension and for sentence classification / matching, and their losses.

Labels per feature (one window of one question), as the data pipeline provides them:
  start_positions, end_positions: LongTensor [batch], token indices inside the window of the
      answer's first and last token. A feature without a span target (a window missing the answer,
      a yes/no/unknown question) is pointed at 0, [CLS] (cnbert.data.mrc_features does this), or
      given IGNORE_INDEX (-100) to leave it out of the span loss.
  answer_class (CJRC only): LongTensor [batch] with ANSWER_CLASSES indices
      0 span, 1 yes, 2 no, 3 unknown; IGNORE_INDEX (-100) for a window of a span question that does
      not contain the answer, so such windows are never taught "unknown".
  labels (classification): LongTensor [batch] of label indices (the task's label order).
Models return a dict of logits: "start_logits", "end_logits" [batch, seq] and, for CJRC,
"class_logits" [batch, 4]; a classifier returns "logits" [batch, num_labels]. Logits (float32_head) and losses are computed in float32 whatever the autocast dtype.
reduction="mean": each term (start, end, class) is a mean over its non-ignored features (0, still
differentiable, when there are none), the transformers convention.
reduction="none": one loss per feature, an ignored term counting 0 — what a trainer needs to sum
per-feature losses over micro-batches and processes and divide by the global batch size.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnbert.config import BertConfig, check_label_names
from cnbert.data.labels import IGNORE_INDEX, check_labels
from cnbert.data.mrc_examples import ANSWER_CLASSES
from cnbert.torch.modeling import BertModel, init_bert_weights


def float32_head(linear: nn.Linear, features: Tensor) -> Tensor:
    """linear(features) outside autocast, in the head's own dtype (float32, or float64 for a float64
    model): logits rounded to bf16 tie where the float32 ones do not (DBQA's candidates ranked by
    p(label 1), n-best spans, a tag's argmax), and a head is a sliver of the model's compute."""
    with torch.autocast(features.device.type, enabled=False):
        return linear(features.to(linear.weight.dtype))


class _EncoderTaskModel(nn.Module):
    """A task model's encoder (no pooler) lives in the attribute `base_model_prefix` names ("bert",
    so its weights are "bert.*" as in transformers). Subclasses for another encoder
    (cnbert.torch.albert) change that and `build_encoder` and keep the heads unchanged."""

    base_model_prefix = "bert"

    @staticmethod
    def build_encoder(config: BertConfig, add_pooling_layer: bool = False) -> nn.Module:
        return BertModel(config, add_pooling_layer=add_pooling_layer)

    @property
    def base_model(self) -> nn.Module:
        return getattr(self, self.base_model_prefix)


class BertForSpanExtraction(_EncoderTaskModel):
    """Span extraction (CMRC 2018, DRCD): `qa_outputs` = Linear(hidden, 2) on every token, the same
    names as transformers' BertForQuestionAnswering (no pooler), so its checkpoints map directly."""

    hf_architecture = "BertForQuestionAnswering"
    head_prefixes = ("qa_outputs.",)

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.add_module(self.base_model_prefix, self.build_encoder(config))
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        init_bert_weights(self.qa_outputs, config.initializer_range)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None) -> dict[str, Tensor]:
        sequence_output = self.base_model(input_ids, attention_mask, token_type_ids, position_ids).sequence_output
        start, end = float32_head(self.qa_outputs, sequence_output).unbind(dim=-1)
        return {"start_logits": start.contiguous(), "end_logits": end.contiguous()}


class BertForCJRC(_EncoderTaskModel):
    """CJRC: the span head plus `answer_class` = Linear(hidden, 4) over (span, yes, no, unknown),
    applied (after dropout) to the final hidden state of [CLS].

    [CLS]'s own hidden state rather than the pooler keeps the model pooler-free like
    BertForQuestionAnswering, so a span checkpoint (HF or cnbert) initialises everything but
    `answer_class`. Including "span" as a class puts all four answer kinds on one softmax, so
    post-processing compares kinds without calibrating span scores against class scores.
    """

    hf_architecture = "BertForCJRC"
    head_prefixes = ("qa_outputs.", "answer_class.")

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.add_module(self.base_model_prefix, self.build_encoder(config))
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        self.class_dropout = nn.Dropout(config.classifier_dropout_rate)
        self.answer_class = nn.Linear(config.hidden_size, len(ANSWER_CLASSES))
        init_bert_weights(self.qa_outputs, config.initializer_range)
        init_bert_weights(self.answer_class, config.initializer_range)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None) -> dict[str, Tensor]:
        sequence_output = self.base_model(input_ids, attention_mask, token_type_ids, position_ids).sequence_output
        start, end = float32_head(self.qa_outputs, sequence_output).unbind(dim=-1)
        class_logits = float32_head(self.answer_class, self.class_dropout(sequence_output[:, 0]))
        return {"start_logits": start.contiguous(), "end_logits": end.contiguous(), "class_logits": class_logits}


class _LabelledHeadModel(_EncoderTaskModel):
    """`classifier` = Linear(hidden, len(labels)) after dropout, on the pooled [CLS] vector (`pooled`)
    or on every token. `labels` (the names, in output order) are saved as config.json's id2label /
    label2id; the names are transformers' (bert.*, classifier.*), so its checkpoints with the same
    number of labels load directly."""

    head_prefixes = ("classifier.",)
    pooled = False

    def __init__(self, config: BertConfig, labels: Sequence[str]):
        super().__init__()
        self.config = config
        self.labels = check_label_names(labels)
        self.add_module(self.base_model_prefix, self.build_encoder(config, add_pooling_layer=self.pooled))
        self.dropout = nn.Dropout(config.classifier_dropout_rate)
        self.classifier = nn.Linear(config.hidden_size, len(self.labels))
        init_bert_weights(self.classifier, config.initializer_range)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None) -> dict[str, Tensor]:
        encoded = self.base_model(input_ids, attention_mask, token_type_ids, position_ids)
        features = encoded.pooled_output if self.pooled else encoded.sequence_output
        return {"logits": float32_head(self.classifier, self.dropout(features))}


class BertForSequenceClassification(_LabelledHeadModel):
    """Sentence classification and matching: logits [batch, labels] from the pooled [CLS] vector, as
    transformers' BertForSequenceClassification. The pooler is pretrained (next-sentence
    prediction), so it comes from the checkpoint like the rest of the encoder."""

    hf_architecture = "BertForSequenceClassification"
    pooled = True


class BertForTokenClassification(_LabelledHeadModel):
    """Tagging (NER): logits [batch, seq, tags] from every token, as transformers'
    BertForTokenClassification (no pooler)."""

    hf_architecture = "BertForTokenClassification"


def token_classification_loss(outputs: Mapping[str, torch.Tensor], tags, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of `tags` [batch, seq] (IGNORE_INDEX on special tokens and padding) under
    outputs["logits"] [batch, seq, tags]. reduction="mean": over every tagged token of the batch (the
    transformers convention); "none": each example's mean over its tagged tokens (0 with none)."""
    logits = outputs["logits"]
    if tags.shape != logits.shape[:2]:
        raise ValueError(f"tags has shape {tuple(tags.shape)}, expected {tuple(logits.shape[:2])}")
    per_token = _cross_entropy(logits.flatten(0, 1), tags.flatten(), logits.shape[-1], "tags", "none")
    per_token = per_token.view(tags.shape)
    tagged = (tags != IGNORE_INDEX).sum(dim=1)
    if reduction == "none":
        return per_token.sum(dim=1) / tagged.clamp(min=1)
    return per_token.sum() / tagged.sum().clamp(min=1)


def classification_loss(outputs: Mapping[str, torch.Tensor], labels, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of `labels` (IGNORE_INDEX entries left out) under outputs["logits"]."""
    logits = outputs["logits"]
    return _cross_entropy(logits, labels, logits.shape[-1], "labels", reduction)


def span_loss(outputs: Mapping[str, torch.Tensor], start_positions, end_positions,
              reduction: str = "mean") -> torch.Tensor:
    """(cross-entropy of start + cross-entropy of end) / 2, the transformers convention; positions
    equal to IGNORE_INDEX are left out. A position outside the window raises ValueError."""
    seq_len = outputs["start_logits"].shape[1]
    start = _cross_entropy(outputs["start_logits"], start_positions, seq_len, "start_positions", reduction)
    end = _cross_entropy(outputs["end_logits"], end_positions, seq_len, "end_positions", reduction)
    return (start + end) / 2


def cjrc_loss(outputs: Mapping[str, torch.Tensor], start_positions, end_positions, answer_class,
              reduction: str = "mean") -> torch.Tensor:
    """span_loss + cross-entropy of answer_class (IGNORE_INDEX entries left out)."""
    return (span_loss(outputs, start_positions, end_positions, reduction)
            + _cross_entropy(outputs["class_logits"], answer_class, len(ANSWER_CLASSES), "answer_class", reduction))


def _cross_entropy(logits, targets, num_classes: int, name: str, reduction: str) -> torch.Tensor:
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    if targets.shape != logits.shape[:1]:
        raise ValueError(f"{name} has shape {tuple(targets.shape)}, expected ({logits.shape[0]},)")
    targets = targets.long()
    check_labels(name, targets.cpu().numpy(), num_classes)
    per_feature = F.cross_entropy(logits.float(), targets, ignore_index=IGNORE_INDEX, reduction="none")
    if reduction == "none":
        return per_feature  # ignored features are 0
    return per_feature.sum() / (targets != IGNORE_INDEX).sum().clamp(min=1)
