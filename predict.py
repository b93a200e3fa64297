"""Segments images with an exported SavedModel and writes coloured masks and overlays.

    python predict.py --saved_model=runs/voc_8/export --images='photos/*.jpg' --output_dir=out

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
flags.DEFINE_string("saved_model", None, "Exported SavedModel directory.")
flags.DEFINE_string("images", None, "Glob of input images (quote it).")
flags.DEFINE_string("output_dir", None, "Where the PNGs go.")
flags.DEFINE_float("overlay_alpha", 0.5, "Weight of the mask in the overlay.")
flags.mark_flags_as_required(["saved_model", "images", "output_dir"])


def palette(labels, num_classes):
    import numpy as np

    if labels and "colormap" in labels:
        return np.asarray(labels["colormap"], np.uint8)
    from datasets.dataset_info import generated_colormap

    return np.asarray(generated_colormap(max(num_classes, 256)), np.uint8)


def main(argv):
    del argv
    import numpy as np
    import tensorflow as tf
    from PIL import Image

    from core.export_files import read_labels

    paths = sorted(glob.glob(FLAGS.images))
    if not paths:
        print(f"ERROR: no image matches {FLAGS.images!r}", file=sys.stderr)
        sys.exit(1)
    model = tf.saved_model.load(FLAGS.saved_model)
    serve = model.signatures["serving_default"]
    labels = read_labels(FLAGS.saved_model)
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    colors = None
    for i, path in enumerate(paths, 1):
        try:
            image = np.asarray(Image.open(path).convert("RGB"))
        except OSError as error:
            print(f"ERROR: cannot read image {path}: {error}", file=sys.stderr)
            sys.exit(1)
        outputs = serve(images=tf.constant(image[None]))
        semantic = outputs["semantic"].numpy()[0]
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
