"""SavedModel export of a segmentation network, preprocessing inside.

Signatures:

* ``serving_default``: ``images`` uint8 ``[N, H, W, 3]`` (RGB, any size) ->
  ``semantic`` int32 ``[N, H, W]`` (class map at the input size) and
  ``probabilities`` float32 ``[N, H, W, C]``.
* ``predict_float``: the same from float32 images in [0, 255] (used by
  ``eval.py --saved_model`` so padded evaluation crops keep the 127.5 mean pixel).

``labels.json`` beside ``saved_model.pb`` holds the class names, ignore
label and colour map. The SavedModel loads with ``tf.saved_model.load`` in a
process that never imports this project.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import tensorflow as tf

from core.layers import resize_bilinear_align_corners

LABELS_FILE = "labels.json"


class SegmentationServing(tf.Module):
    def __init__(self, network):
        super().__init__(name="segmentation_serving")
        self.network = network

    def _predict(self, images):
        logits = self.network(images, training=False)["logits"]
        logits = resize_bilinear_align_corners(tf.cast(logits, tf.float32),
                                               tf.shape(images)[1:3])
        probabilities = tf.nn.softmax(logits, axis=-1)
        return {"semantic": tf.argmax(probabilities, axis=-1, output_type=tf.int32),
                "probabilities": probabilities}

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8,
                                                name="images")])
    def serve(self, images):
        return self._predict(tf.cast(images, tf.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32,
                                                name="images")])
    def predict_float(self, images):
        return self._predict(images)


def export_saved_model(network, export_dir: str, info=None) -> str:
    """Writes the SavedModel to ``export_dir`` (atomically: a temporary
    directory renamed over any previous export)."""
    export_dir = export_dir.rstrip("/")
    temporary = export_dir + ".tmp"
    if os.path.exists(temporary):
        shutil.rmtree(temporary)
    module = SegmentationServing(network)
    tf.saved_model.save(module, temporary, signatures={
        "serving_default": module.serve.get_concrete_function(),
        "predict_float": module.predict_float.get_concrete_function()})
    if info is not None:
        labels = dict(dataset=info.name, num_classes=info.num_classes,
                      ignore_label=info.ignore_label, class_names=list(info.class_names),
                      colormap=np.asarray(info.colormap).astype(int).tolist())
        with open(os.path.join(temporary, LABELS_FILE), "w") as f:
            json.dump(labels, f, indent=1)
    if os.path.exists(export_dir):
        shutil.rmtree(export_dir)
    os.rename(temporary, export_dir)
    return export_dir


def read_labels(export_dir: str) -> dict | None:
    path = os.path.join(export_dir, LABELS_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)
