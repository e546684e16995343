"""SavedModel export with a serving signature, for TF Serving and other TF runtimes."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import keras
import tensorflow as tf

from cnbert.tf.checkpoint import replace_directory

SERVING_INPUTS = ("input_ids", "token_type_ids", "attention_mask")


def export_saved_model(model: keras.Model, directory) -> Path:
    """Write a SavedModel whose "serving_default" signature maps int32 [batch, seq] input_ids,
    token_type_ids and attention_mask to float32 start_logits, end_logits [batch, seq] (and
    class_logits [batch, 4] for a CJRC model). Written beside `directory` and renamed into place."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))

    def serve(input_ids, token_type_ids, attention_mask):
        return model(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, training=False)

    try:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(name="serving_default", fn=serve, input_signature=[
            tf.TensorSpec([None, None], tf.int32, name=name) for name in SERVING_INPUTS])
        archive.write_out(str(staging / "saved_model"), verbose=False)
        replace_directory(staging / "saved_model", directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory
