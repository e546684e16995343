"""Framework-neutral checkpoint layouts: canonical (Hugging Face BertModel / AlbertModel, cnbert's
factorized ALBERT) weight names, strict matching rules, TF1 name mappings (Google BERT, Google ALBERT,
brightmart albert_zh, siBert) and model-directory discovery. Imports neither torch nor TensorFlow (`load_tf_checkpoint` and `list_tf_variables` import
TensorFlow when called)."""
from cnbert.checkpoints.albert_layout import (
    ALBERT_ENCODER_PREFIX,
    ALBERT_PRETRAINING_HEAD_PREFIXES,
    albert_architecture,
    albert_parameter_shapes,
    albert_tf_names,
    albert_tf_to_model,
    model_to_albert_tf,
)
from cnbert.checkpoints.bert_layout import (
    BERT_NAME,
    ENCODER_PREFIX,
    PRETRAINING_HEAD_PREFIXES,
    CheckpointError,
    ConvertedTFWeights,
    LoadPlan,
    LoadReport,
    bert_parameter_shapes,
    normalize_checkpoint_names,
    plan_load,
    reading_weights,
)
from cnbert.checkpoints.files import (
    WeightsFile,
    check_classifier_labels,
    check_vocab_size,
    check_vocabulary,
    find_config,
    find_weights,
    is_sibert_checkpoint,
    read_pretrained_config,
)
from cnbert.checkpoints.model_dir import check_loaded_labels, read_tf_weights, write_model_directory
from cnbert.checkpoints.sibert_layout import SIBERT_PREFIX, sibert_to_hf
from cnbert.checkpoints.tf_layouts import ALBERT_TF_LAYOUTS, TF_LAYOUTS, convert_tf_variables, detect_tf_layout
from cnbert.checkpoints.google_tf import (
    TFConversion,
    google_to_hf,
    hf_to_google,
    is_skipped_variable,
    list_tf_variables,
    load_tf_checkpoint,
    tf_checkpoint_prefix,
)

__all__ = [
    "BERT_NAME", "ENCODER_PREFIX", "PRETRAINING_HEAD_PREFIXES", "CheckpointError", "ConvertedTFWeights", "LoadPlan", "LoadReport",
    "bert_parameter_shapes", "normalize_checkpoint_names", "plan_load", "reading_weights", "WeightsFile", "check_classifier_labels", "check_vocab_size", "check_vocabulary",
    "find_config", "find_weights", "is_sibert_checkpoint", "read_pretrained_config", "TFConversion", "google_to_hf", "hf_to_google",
    "load_tf_checkpoint", "tf_checkpoint_prefix", "is_skipped_variable", "list_tf_variables",
    "ALBERT_ENCODER_PREFIX", "ALBERT_PRETRAINING_HEAD_PREFIXES", "albert_architecture", "albert_parameter_shapes",
    "albert_tf_names", "albert_tf_to_model",
    "convert_tf_variables", "detect_tf_layout", "model_to_albert_tf", "TF_LAYOUTS", "ALBERT_TF_LAYOUTS",
    "SIBERT_PREFIX", "sibert_to_hf", "check_loaded_labels", "read_tf_weights", "write_model_directory",
]
