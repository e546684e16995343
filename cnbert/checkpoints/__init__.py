"""Framework-neutral checkpoint layouts: canonical (Hugging Face BertModel) weight names, strict
matching rules, Google TF1 name mapping and model-directory discovery. Imports neither torch nor
TensorFlow (`load_tf_checkpoint` imports TensorFlow when called)."""
from cnbert.checkpoints.bert_layout import (
    BERT_NAME,
    ENCODER_PREFIX,
    PRETRAINING_HEAD_PREFIXES,
    CheckpointError,
    LoadPlan,
    bert_parameter_shapes,
    normalize_checkpoint_names,
    plan_load,
)
from cnbert.checkpoints.files import (
    WeightsFile,
    check_vocab_size,
    find_config,
    find_weights,
    read_pretrained_config,
)
from cnbert.checkpoints.google_tf import (
    TFConversion,
    google_to_hf,
    hf_to_google,
    load_tf_checkpoint,
    tf_checkpoint_prefix,
)

__all__ = [
    "BERT_NAME", "ENCODER_PREFIX", "PRETRAINING_HEAD_PREFIXES", "CheckpointError", "LoadPlan",
    "bert_parameter_shapes", "normalize_checkpoint_names", "plan_load", "WeightsFile", "check_vocab_size",
    "find_config", "find_weights", "read_pretrained_config", "TFConversion", "google_to_hf", "hf_to_google",
    "load_tf_checkpoint", "tf_checkpoint_prefix",
]
