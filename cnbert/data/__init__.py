"""Framework-neutral task data: reading-comprehension examples, features and post-processing;
classification and matching examples and features (cnbert.data.classification); character-level
NER sentences, features and entity scores (cnbert.data.ner).

    result = read_cmrc2018(path)            # or read_drcd / read_cjrc -> ReadResult(examples, report)
    features = build_features(result.examples, ChineseBertTokenizer(), FeatureConfig(), training=True)
    ... model on features.model_arrays() ...
    predictions = postprocess_predictions(examples, eval_features, start_logits, end_logits)
    predictions.write(output_dir)           # predictions.json, nbest_predictions.json (CJRC: class_scores.json)
"""
from cnbert.data.chinese_convert import TraditionalToSimplified
from cnbert.data.classification import (
    ClassificationExample,
    ClassificationFeatures,
    TsvFormat,
    build_classification_features,
    read_classification_tsv,
    truncate_pair,
)
from cnbert.data.labels import IGNORE_INDEX, check_labels
from cnbert.data.mrc_examples import (
    ANSWER_CLASSES,
    AnswerKind,
    InconsistentAnswer,
    MrcAnswer,
    MrcExample,
    OffsetRepair,
    ReadReport,
    ReadResult,
    locate_answer_start,
    question_example,
    read_cjrc,
    read_cmrc2018,
    read_drcd,
)
from cnbert.data.mrc_features import NOT_CONTEXT, FeatureConfig, MrcFeatures, build_features
from cnbert.data.mrc_postprocess import MrcPredictions, SpanCandidate, postprocess_predictions
from cnbert.data.ner import NerFeatures, NerSentence, build_ner_features, decode_tags, entities, entity_scores, read_bio

__all__ = [
    "ClassificationExample", "ClassificationFeatures", "TsvFormat", "build_classification_features",
    "read_classification_tsv", "truncate_pair", "ANSWER_CLASSES", "AnswerKind", "IGNORE_INDEX", "check_labels", "FeatureConfig", "InconsistentAnswer", "MrcAnswer", "MrcExample", "MrcFeatures",
    "MrcPredictions", "NOT_CONTEXT", "OffsetRepair", "question_example", "ReadReport", "ReadResult", "SpanCandidate",
    "TraditionalToSimplified", "build_features", "locate_answer_start", "postprocess_predictions", "read_cjrc",
    "read_cmrc2018", "read_drcd", "NerFeatures", "NerSentence", "build_ner_features", "decode_tags", "entities",
    "entity_scores", "read_bio",
]
