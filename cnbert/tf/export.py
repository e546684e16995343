"""SavedModel export with a serving signature, for TF Serving and other TF runtimes."""
from __future__ import annotations

from pathlib import Path

import keras
import tensorflow as tf

from cnbert.io_utils import atomic_directory
from cnbert.tf.modeling import precision_scope

SERVING_INPUTS = ("input_ids", "token_type_ids", "attention_mask")


def export_saved_model(model: keras.Model, directory, precision: str = "fp32") -> Path:
    """Write a SavedModel whose "serving_default" signature maps int32 [batch, seq] input_ids,
    token_type_ids and attention_mask to float32 start_logits, end_logits [batch, seq] (and
    class_logits [batch, 4] for a CJRC model; logits [batch, num_labels] for a classifier), computed in `precision` whatever precision the model
    was trained in (the model itself is left as it was). Written beside `directory` and renamed
    into place."""
    directory = Path(directory)

    def serve(input_ids, token_type_ids, attention_mask):
        return model(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, training=False)

    with precision_scope(model, precision), atomic_directory(directory) as staging:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(name="serving_default", fn=serve, input_signature=[
            tf.TensorSpec([None, None], tf.int32, name=name) for name in SERVING_INPUTS])
        archive.write_out(str(staging), verbose=False)
    return directory
