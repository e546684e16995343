"""Reading-comprehension, classification and tagging task models and their losses, mirroring
cnbert.torch.heads (same labels, same outputs, same loss definitions; see that module's docstring
for the label conventions).

Outputs are float32 whatever the precision: "start_logits", "end_logits" [batch, seq] and, for
CJRC, "class_logits" [batch, 4]; a classifier's "logits" [batch, num_labels], a tagger's [batch,
seq, num_labels]. Losses: (CE start + CE end) / 2, plus CE of answer_class for CJRC; CE of labels
for a classifier, of tags for a tagger; IGNORE_INDEX (-100)
leaves a term out. reduction="mean": each term is a mean over its non-ignored features (0 when
there are none); reduction="none": one loss per feature, an ignored term counting 0.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import keras
import tensorflow as tf

from cnbert.config import BertConfig, check_label_names, config_from_dict
from cnbert.data.labels import IGNORE_INDEX, check_labels
from cnbert.data.mrc_examples import ANSWER_CLASSES
from cnbert.tasks import HEAD_LABELS, TASK_HEADS
from cnbert.tf.modeling import CLASS_DROPOUT_SITE, BertModel, Linear, dropout



class _TaskModel(keras.Model):
    """An encoder (named "bert"; with the pooler when the head reads it) plus heads; subclasses add
    heads and outputs.

    Every layer builds itself in the constructor, outside the task model's name scope, so a
    variable's path is its checkpoint-style name whatever the task model is called:
    bert/encoder/layer_0/..., qa_outputs/kernel, answer_class/bias, classifier/kernel.
    """

    hf_architecture = ""
    head_prefixes: tuple[str, ...] = ()
    encoder_class = BertModel  # cnbert.tf.albert's task models put the heads on AlbertModel

    def __init__(self, config: BertConfig, gradient_checkpointing: bool = False, name: str | None = None,
                 add_pooling_layer: bool = False):
        super().__init__(name=name, dtype="float32")  # see cnbert.tf.modeling.set_precision
        self.config = config
        self.bert = self.encoder_class(config, add_pooling_layer=add_pooling_layer,
                                       gradient_checkpointing=gradient_checkpointing)

    def build(self, input_shape=None):
        """Nothing left to create: the layers were built in the constructor."""

    def get_config(self) -> dict:
        """The constructor's arguments, the model config as a dict (as cnbert.tf.modeling.BertModel)."""
        return {"config": self.config.to_dict(), "gradient_checkpointing": self.bert.encoder.gradient_checkpointing}

    @classmethod
    def from_config(cls, config: dict) -> "_TaskModel":
        return cls(**{**config, "config": config_from_dict(config["config"])})

    def same_architecture(self) -> "_TaskModel":
        """A freshly initialised model of the same class, config and labels (a replica's copy)."""
        return type(self).from_config(self.get_config())

    def _encode(self, input_ids, attention_mask, token_type_ids, training, dropout_seed):
        """(the encoder's outputs, the step's dropout seed or None)."""
        seed = self.bert._dropout_seed(training, dropout_seed)
        encoded = self.bert(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                            training=training, dropout_seed=seed)
        return encoded, seed


class _SpanModel(_TaskModel):
    """The encoder without pooler and the span head qa_outputs = Linear(hidden, 2) on every token."""

    def __init__(self, config: BertConfig, gradient_checkpointing: bool = False, name: str | None = None):
        super().__init__(config, gradient_checkpointing, name=name)
        self.qa_outputs = Linear(2, config.initializer_range, name="qa_outputs")
        self.qa_outputs.build((None, None, config.hidden_size))

    def _encode_spans(self, input_ids, attention_mask, token_type_ids, training, dropout_seed):
        """(sequence output, span logits, the step's dropout seed or None)."""
        encoded, seed = self._encode(input_ids, attention_mask, token_type_ids, training, dropout_seed)
        sequence_output = encoded["sequence_output"]
        logits = tf.cast(self.qa_outputs(sequence_output), tf.float32)
        return sequence_output, {"start_logits": logits[..., 0], "end_logits": logits[..., 1]}, seed


@keras.saving.register_keras_serializable(package="cnbert")
class BertForSpanExtraction(_SpanModel):
    """Span extraction (CMRC 2018, DRCD): qa_outputs = Linear(hidden, 2) on every token; canonical
    names are those of transformers' BertForQuestionAnswering."""

    hf_architecture = "BertForQuestionAnswering"
    head_prefixes = ("qa_outputs.",)

    def __init__(self, config: BertConfig, gradient_checkpointing: bool = False):
        super().__init__(config, gradient_checkpointing, name="bert_for_span_extraction")
        self.build()

    def call(self, input_ids, attention_mask=None, token_type_ids=None, training=False, dropout_seed=None):
        return self._encode_spans(input_ids, attention_mask, token_type_ids, training, dropout_seed)[1]


@keras.saving.register_keras_serializable(package="cnbert")
class BertForCJRC(_SpanModel):
    """CJRC: the span head plus answer_class = Linear(hidden, 4) over (span, yes, no, unknown) on
    [CLS]'s final hidden state after dropout (why [CLS] and not the pooler: cnbert.torch.heads)."""

    hf_architecture = "BertForCJRC"
    head_prefixes = ("qa_outputs.", "answer_class.")

    def __init__(self, config: BertConfig, gradient_checkpointing: bool = False):
        super().__init__(config, gradient_checkpointing, name="bert_for_cjrc")
        self.answer_class = Linear(len(ANSWER_CLASSES), config.initializer_range, name="answer_class")
        self.answer_class.build((None, config.hidden_size))
        self.build()

    def call(self, input_ids, attention_mask=None, token_type_ids=None, training=False, dropout_seed=None):
        sequence_output, outputs, seed = self._encode_spans(input_ids, attention_mask, token_type_ids, training,
                                                            dropout_seed)
        cls = dropout(sequence_output[:, 0], self.config.classifier_dropout_rate, seed, CLASS_DROPOUT_SITE)
        outputs["class_logits"] = tf.cast(self.answer_class(cls), tf.float32)
        return outputs


class _LabelledHeadModel(_TaskModel):
    """classifier = Linear(hidden, len(labels)) after dropout, on the pooled [CLS] vector (`pooled`)
    or on every token; canonical names are transformers' (see cnbert.torch.heads)."""

    head_prefixes = ("classifier.",)
    pooled = False
    model_name = ""

    def __init__(self, config: BertConfig, labels: Sequence[str], gradient_checkpointing: bool = False):
        super().__init__(config, gradient_checkpointing, name=self.model_name, add_pooling_layer=self.pooled)
        self.labels = check_label_names(labels)
        self.classifier = Linear(len(self.labels), config.initializer_range, name="classifier")
        self.classifier.build((None, config.hidden_size) if self.pooled else (None, None, config.hidden_size))
        self.build()

    def get_config(self) -> dict:
        return {**super().get_config(), "labels": list(self.labels)}

    def call(self, input_ids, attention_mask=None, token_type_ids=None, training=False, dropout_seed=None):
        encoded, seed = self._encode(input_ids, attention_mask, token_type_ids, training, dropout_seed)
        features = encoded["pooled_output" if self.pooled else "sequence_output"]
        features = dropout(features, self.config.classifier_dropout_rate, seed, CLASS_DROPOUT_SITE)
        return {"logits": tf.cast(self.classifier(features), tf.float32)}


@keras.saving.register_keras_serializable(package="cnbert")
class BertForSequenceClassification(_LabelledHeadModel):
    """Sentence classification and matching: logits [batch, labels] from the pooled [CLS] vector, as
    transformers' BertForSequenceClassification."""

    hf_architecture = "BertForSequenceClassification"
    pooled = True
    model_name = "bert_for_sequence_classification"


@keras.saving.register_keras_serializable(package="cnbert")
class BertForTokenClassification(_LabelledHeadModel):
    """Tagging (NER): logits [batch, seq, tags] from every token, as transformers'
    BertForTokenClassification (no pooler)."""

    hf_architecture = "BertForTokenClassification"
    model_name = "bert_for_token_classification"


def token_classification_loss(outputs: Mapping[str, tf.Tensor], tags, reduction: str = "mean") -> tf.Tensor:
    """Cross-entropy of `tags` [batch, seq] (IGNORE_INDEX on special tokens and padding):
    reduction="mean" over every tagged token, "none" each example's mean over its tagged tokens."""
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    logits = outputs["logits"]
    tags = tf.convert_to_tensor(tags)
    if not tags.shape.is_compatible_with(logits.shape[:2]):
        raise ValueError(f"tags has shape {tuple(tags.shape)}, expected {tuple(logits.shape[:2])}")
    if tf.executing_eagerly():
        check_labels("tags", tags.numpy(), logits.shape[-1])
    tags = tf.cast(tags, tf.int32)
    keep = tf.not_equal(tags, IGNORE_INDEX)
    per_token = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.where(keep, tags, 0),
                                                               logits=tf.cast(logits, tf.float32))
    per_token = tf.where(keep, per_token, 0.0)
    tagged = tf.reduce_sum(tf.cast(keep, tf.float32), axis=1)
    if reduction == "none":
        return tf.reduce_sum(per_token, axis=1) / tf.maximum(tagged, 1.0)
    return tf.reduce_sum(per_token) / tf.maximum(tf.reduce_sum(tagged), 1.0)


def classification_loss(outputs: Mapping[str, tf.Tensor], labels, reduction: str = "mean") -> tf.Tensor:
    """Cross-entropy of `labels` (IGNORE_INDEX entries left out) under outputs["logits"]."""
    logits = outputs["logits"]
    return _cross_entropy(logits, labels, logits.shape[-1], "labels", reduction)


def span_loss(outputs: Mapping[str, tf.Tensor], start_positions, end_positions, reduction: str = "mean") -> tf.Tensor:
    """(cross-entropy of start + cross-entropy of end) / 2; IGNORE_INDEX positions are left out.
    Called eagerly, a position outside the window raises ValueError (compiled code relies on
    check_labels having been run on the data)."""
    seq_len = outputs["start_logits"].shape[1]
    start = _cross_entropy(outputs["start_logits"], start_positions, seq_len, "start_positions", reduction)
    end = _cross_entropy(outputs["end_logits"], end_positions, seq_len, "end_positions", reduction)
    return (start + end) / 2


def cjrc_loss(outputs: Mapping[str, tf.Tensor], start_positions, end_positions, answer_class,
              reduction: str = "mean") -> tf.Tensor:
    """span_loss + cross-entropy of answer_class (IGNORE_INDEX entries left out)."""
    return (span_loss(outputs, start_positions, end_positions, reduction)
            + _cross_entropy(outputs["class_logits"], answer_class, len(ANSWER_CLASSES), "answer_class", reduction))


def _cross_entropy(logits, targets, num_classes: int, name: str, reduction: str) -> tf.Tensor:
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    targets = tf.convert_to_tensor(targets)
    if not targets.shape.is_compatible_with(logits.shape[:1]) or targets.shape.rank != 1:
        raise ValueError(f"{name} has shape {tuple(targets.shape)}, expected ({logits.shape[0]},)")
    if tf.executing_eagerly():
        check_labels(name, targets.numpy(), num_classes)
    targets = tf.cast(targets, tf.int32)
    keep = tf.not_equal(targets, IGNORE_INDEX)
    per_feature = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.where(keep, targets, 0),
                                                                 logits=tf.cast(logits, tf.float32))
    per_feature = tf.where(keep, per_feature, 0.0)
    if reduction == "none":
        return per_feature
    return tf.reduce_sum(per_feature) / tf.maximum(tf.reduce_sum(tf.cast(keep, tf.float32)), 1.0)


# Task name -> the model class the trainer takes (the ALBERT task models are its subclasses).
_HEAD_MODELS = {"span": BertForSpanExtraction, "cjrc": BertForCJRC, "classification": BertForSequenceClassification,
                "tagging": BertForTokenClassification}
TASK_MODELS = {task: _HEAD_MODELS[head] for task, head in TASK_HEADS.items()}
_HEAD_LOSSES = {"span": span_loss, "cjrc": cjrc_loss, "classification": classification_loss,
                "tagging": token_classification_loss}


def task_loss(task: str, outputs: Mapping[str, tf.Tensor], labels: Mapping[str, tf.Tensor],
              reduction: str = "none") -> tf.Tensor:
    """The task's loss (per feature by default, as the trainer needs it) of the label arrays
    cnbert.tasks.HEAD_LABELS names."""
    head = TASK_HEADS[task]
    return _HEAD_LOSSES[head](outputs, *(labels[name] for name in HEAD_LABELS[head]), reduction)
