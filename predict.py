"""Segments images with an exported model and writes coloured masks and overlays.

    python predict.py --model=runs/voc_8/export --images='photos/*.jpg' --output_dir=out
    python predict.py --model=exports/voc_8_tflite --images='photos/*.jpg' --output_dir=out

``--model`` is a SavedModel directory (``export.py`` or train.py's
``export/``), or a TFLite export: its directory or its ``model.tflite`` (run
with ``ai-edge-litert``, without TensorFlow). ``--saved_model`` is an alias.

For each image ``<stem>_mask.png`` (the class map in the dataset's palette)
and ``<stem>_overlay.png`` (the mask blended over the image). The palette
comes from the export's ``labels.json``.
"""

from __future__ import annotations

import glob
import os
import sys

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None,
                    "Exported SavedModel directory, or a TFLite export (directory or .tflite).")
flags.DEFINE_alias("saved_model", "model")
flags.DEFINE_string("images", None, "Glob of input images (quote it).")
flags.DEFINE_string("output_dir", None, "Where the PNGs go.")
flags.DEFINE_float("overlay_alpha", 0.5, "Weight of the mask in the overlay.")
flags.mark_flags_as_required(["model", "images", "output_dir"])


def fail(message: str):
    print(f"ERROR: {message}", file=sys.stderr)
    sys.exit(1)


def palette(labels, num_classes):
    import numpy as np

    if labels and "colormap" in labels:
        return np.asarray(labels["colormap"], np.uint8)
    from datasets.dataset_info import generated_colormap

    return np.asarray(generated_colormap(max(num_classes, 256)), np.uint8)


def load_model(path: str):
    """(segment, labels): ``segment(uint8 [N, H, W, 3]) -> {"semantic",
    "probabilities"}`` as numpy arrays, for a TFLite or a SavedModel export."""
    from core.export_files import read_labels
    from core.tflite_runtime import TFLiteSegmenter, tflite_model_path

    tflite = tflite_model_path(path)
    if tflite is not None:
        return TFLiteSegmenter(tflite), read_labels(os.path.dirname(tflite))
    if not os.path.isfile(os.path.join(path, "saved_model.pb")):
        fail(f"--model={path} is neither a SavedModel directory nor a TFLite export")
    import tensorflow as tf

    serve = tf.saved_model.load(path).signatures["serving_default"]

    def segment(images):
        return {key: value.numpy() for key, value in serve(images=tf.constant(images)).items()}

    return segment, read_labels(path)


def main(argv):
    del argv
    import numpy as np
    from PIL import Image

    paths = sorted(glob.glob(FLAGS.images))
    if not paths:
        fail(f"no image matches {FLAGS.images!r}")
    segment, labels = load_model(FLAGS.model)
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    colors = None
    for i, path in enumerate(paths, 1):
        try:
            image = np.asarray(Image.open(path).convert("RGB"))
        except OSError as error:
            fail(f"cannot read image {path}: {error}")
        try:
            outputs = segment(image[None])
        except ValueError as error:
            fail(f"{path}: {error}")
        semantic = outputs["semantic"][0]
        if colors is None:
            colors = palette(labels, outputs["probabilities"].shape[-1])
        mask = colors[semantic]
        overlay = (FLAGS.overlay_alpha * mask + (1 - FLAGS.overlay_alpha) * image)
        stem = os.path.splitext(os.path.basename(path))[0]
        Image.fromarray(mask).save(os.path.join(FLAGS.output_dir, f"{stem}_mask.png"))
        Image.fromarray(overlay.astype(np.uint8)).save(
            os.path.join(FLAGS.output_dir, f"{stem}_overlay.png"))
        print(f"[{i}/{len(paths)}] {path}")
    print(f"wrote {2 * len(paths)} files to {FLAGS.output_dir}")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    app.run(main)
