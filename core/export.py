"""SavedModel export of a segmentation network, preprocessing inside.

    export_saved_model(network, "exports/voc_8", info)

Signatures:

* ``serving_default``: ``images`` uint8 ``[N, H, W, 3]`` (RGB, any size) ->
  ``semantic`` int32 ``[N, H, W]`` (class map at the input size) and
  ``probabilities`` float32 ``[N, H, W, C]``.
* ``predict_float``: the same from float32 images in [0, 255] (used by
  ``eval.py --saved_model`` so padded evaluation crops keep the 127.5 mean pixel).

The logits are resized to the input size bilinearly with aligned corners
(``core.layers.resize_bilinear_align_corners``, DeepLab's resize) before the
softmax and the argmax.

The SavedModel is written by Keras's own export API
(``keras.export.ExportArchive``), which collects the variables its endpoints'
graphs read (batch-norm statistics included) and saves them with them. The
network itself is not ``track``ed: that is only needed for lookup tables or
for reading ``variables`` off the loaded object, and it stored every
variable a second time (a MobileNetV2 export of 21 MB instead of 11 MB). It
runs in TensorFlow's session-based loaders (``saved_model_cli run``,
TensorFlow Serving) as well as with ``tf.saved_model.load`` in a process that
never imports this project. (The earlier hand-written ``tf.Module`` saved
with ``tf.saved_model.save`` loaded with ``tf.saved_model.load`` but not in
the session loaders, which failed with "Could not find variable
...BatchNorm/beta".)

``labels.json`` beside ``saved_model.pb`` holds the class names, ignore label
and colour map. The export is written to a temporary directory beside
``export_dir`` and renamed over it at the end, so a failed export leaves any
earlier one at that path intact (``core.export_files``).

The TFLite export of the same functions is in ``core.tflite``.
"""

from __future__ import annotations

import json
import os

import keras
import tensorflow as tf

from core.export_files import LABELS_FILE, staged_directory
from core.layers import resize_bilinear_align_corners

SERVING_SIGNATURE = "serving_default"
FLOAT_SIGNATURE = "predict_float"


def uint8_images_spec(input_size=None, batch_size=None) -> tf.TensorSpec:
    """``images`` uint8 ``[N, H, W, 3]``; H and W fixed when ``input_size`` is given."""
    height, width = input_size or (None, None)
    return tf.TensorSpec([batch_size, height, width, 3], tf.uint8, name="images")


def float_images_spec() -> tf.TensorSpec:
    return tf.TensorSpec([None, None, None, 3], tf.float32, name="images")


def segment(network, images):
    """``{"semantic", "probabilities"}`` at the size of ``images`` (float32 in [0, 255])."""
    logits = network(images, training=False)["logits"]
    logits = resize_bilinear_align_corners(tf.cast(logits, tf.float32), tf.shape(images)[1:3])
    probabilities = tf.nn.softmax(logits, axis=-1)
    return {"semantic": tf.argmax(probabilities, axis=-1, output_type=tf.int32),
            "probabilities": probabilities}


def serving_fn(network):
    """The ``serving_default`` function: uint8 ``images`` -> ``segment``."""

    def serve(images):
        return segment(network, tf.cast(images, tf.float32))

    return serve


def float_fn(network):
    """The ``predict_float`` function: float32 ``images`` in [0, 255] -> ``segment``."""

    def predict_float(images):
        return segment(network, images)

    return predict_float


def labels_dict(info) -> dict:
    """``labels.json``'s content from a ``datasets.dataset_info.DatasetInfo``."""
    import numpy as np

    return dict(dataset=info.name, num_classes=info.num_classes,
                ignore_label=info.ignore_label, class_names=list(info.class_names),
                colormap=np.asarray(info.colormap).astype(int).tolist())


def write_labels(directory: str, info):
    if info is not None:
        with open(os.path.join(directory, LABELS_FILE), "w") as f:
            json.dump(labels_dict(info), f, indent=1)


def write_saved_model(network, directory: str, info=None):
    """Writes the SavedModel (both signatures) into ``directory`` through
    ``keras.export.ExportArchive``, and ``labels.json`` when ``info`` is given.
    The endpoints' variables are saved with them (see the module docstring)."""
    archive = keras.export.ExportArchive()
    archive.add_endpoint(SERVING_SIGNATURE, serving_fn(network),
                         input_signature=[uint8_images_spec()])
    archive.add_endpoint(FLOAT_SIGNATURE, float_fn(network),
                         input_signature=[float_images_spec()])
    archive.write_out(directory, verbose=False)
    write_labels(directory, info)


def export_saved_model(network, export_dir: str, info=None) -> str:
    """Writes the SavedModel and ``labels.json`` (when ``info`` is given) to
    ``export_dir``, replacing any previous export only once the new one is
    complete."""
    with staged_directory(export_dir) as staging:
        write_saved_model(network, staging, info)
    return export_dir

