"""TFLite export of a segmentation network, preprocessing inside.

    export_tflite(network, "exports/voc_8_tflite", info, quantize="float16")

writes ``model.tflite`` and ``labels.json`` into the export directory. The
model has one signature, ``serving_default``, the SavedModel's
(``core.export``): ``images`` uint8 ``[N, H, W, 3]`` -> ``semantic`` int32
``[N, H, W]`` and ``probabilities`` float32 ``[N, H, W, C]``, logits resized
to the input size with DeepLab's aligned-corner bilinear resize. H and W are
dynamic (the runtime resizes the input tensor per call) unless ``input_size``
fixes the input to ``[1, H, W, 3]`` for runtimes that want static shapes.

Conversion follows Keras's own LiteRT export: the function is written as a
SavedModel through ``keras.export.ExportArchive``, then converted with
``tf.lite.TFLiteConverter.from_saved_model``, which freezes the variables
into constants and folds batch norm into the convolutions. (Converting the
``tf.function``'s concrete function directly kept the Keras variables as
uninitialised resource variables: ``VAR_HANDLE`` ops and NaN outputs.)

Quantisation (``quantize``):

* ``none``: float32 weights and activations.
* ``float16``: float16 weights (half the size), which CPU runtimes turn back
  into float32 to compute (``target_spec.supported_types = [tf.float16]``).
* ``dynamic_range``: int8 weights, activations quantised on the fly where a
  kernel supports it, float32 elsewhere (``optimizations = [DEFAULT]``
  without a representative dataset).

The model runs with ``ai-edge-litert`` (``core.tflite_runtime``).
TensorFlow and Keras are imported when converting, so that export.py can
check ``--quantize`` against ``QUANTIZATIONS`` before loading them.
"""

from __future__ import annotations

import os
import tempfile

from core.export_files import staged_directory

QUANTIZATIONS = ("none", "float16", "dynamic_range")
MODEL_FILE = "model.tflite"


def check_quantization(quantize: str):
    """Raises ValueError unless ``quantize`` is one of ``QUANTIZATIONS``."""
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize={quantize!r} is unknown; expected one of "
                         f"{', '.join(QUANTIZATIONS)}")


def _configure_quantization(converter, quantize: str):
    import tensorflow as tf

    if quantize == "none":
        return
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]


def convert(network, quantize: str = "none", input_size=None) -> bytes:
    """The ``.tflite`` flatbuffer of ``network``'s serving function.

    ``input_size``: ``(height, width)`` for a static ``[1, H, W, 3]`` input;
    None keeps batch, height and width dynamic.
    """
    import keras
    import tensorflow as tf

    from core.export import SERVING_SIGNATURE, serving_fn, uint8_images_spec

    check_quantization(quantize)
    spec = uint8_images_spec(input_size, batch_size=1 if input_size else None)
    with tempfile.TemporaryDirectory(prefix="tflite_saved_model_") as saved_model_dir:
        archive = keras.export.ExportArchive()
        archive.add_endpoint(SERVING_SIGNATURE, serving_fn(network), input_signature=[spec])
        archive.write_out(saved_model_dir, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(
            saved_model_dir, signature_keys=[SERVING_SIGNATURE])
        _configure_quantization(converter, quantize)
        return converter.convert()


def write_tflite(network, directory: str, info=None, quantize: str = "none",
                 input_size=None) -> str:
    """Writes ``model.tflite`` (and ``labels.json`` when ``info`` is given) into
    ``directory``; returns the model's path."""
    from core.export import write_labels

    content = convert(network, quantize, input_size)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, MODEL_FILE)
    with open(path, "wb") as f:
        f.write(content)
    write_labels(directory, info)
    return path


def export_tflite(network, export_dir: str, info=None, quantize: str = "none",
                  input_size=None) -> str:
    """``write_tflite`` into ``export_dir``, replacing any previous export only
    once the new one is complete."""
    with staged_directory(export_dir) as staging:
        write_tflite(network, staging, info, quantize, input_size)
    return os.path.join(export_dir, MODEL_FILE)
