"""A small procedural segmentation dataset for the demo, in the project's TFRecord format.

    python datasets/synthetic.py --output_dir=data/synthetic

Scenes of one to three objects on cluttered, textured backgrounds. Each
object class has its own shape and texture, so a network can learn them from a
few hundred images in minutes on a CPU:

    0 background   smooth colour noise plus random clutter (lines, specks)
    1 disc         concentric rings
    2 square       checkerboard
    3 triangle     diagonal stripes
    4 cross        dots

Later objects occlude earlier ones. Masks hold the class index (no ignore
pixels; the ignore label is 255). Every record also carries its image-level
labels (``image/class_labels``), so the same data serves the weakly mode.

Splits: ``train`` (all training scenes, with masks), ``labeled`` (1 in
``labeled_fraction`` of them, the pixel-labeled set), ``unlabeled`` (the rest;
their masks stay in the records for monitoring only) and ``val``.
Deterministic for a seed.
"""

from __future__ import annotations

import io
import json
import os
import sys

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
from PIL import Image

CLASS_NAMES = ("background", "disc", "square", "triangle", "cross")
IGNORE_LABEL = 255
DATASET_NAME = "synthetic_shapes"
PARAMS_FILE = "synthetic_params.json"
DEFAULTS = dict(num_train=480, num_val=120, labeled_fraction=8, height=96, width=96, seed=0)


def _background(rng, height, width):
    """Smooth colour noise (a few random sinusoids per channel) plus clutter."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.zeros((height, width, 3), np.float32)
    for channel in range(3):
        value = rng.uniform(60, 190)
        for _ in range(3):
            fy, fx = rng.uniform(0.01, 0.08, size=2)
            phase = rng.uniform(0, 2 * np.pi)
            value = value + rng.uniform(10, 35) * np.sin(fy * yy * 2 * np.pi / 2
                                                         + fx * xx * 2 * np.pi / 2 + phase)
        image[..., channel] = value
    for _ in range(rng.integers(4, 10)):  # clutter: thin random lines
        y0, x0 = rng.uniform(0, [height, width])
        angle = rng.uniform(0, np.pi)
        length = rng.uniform(8, 30)
        t = np.linspace(0, length, int(length * 2))
        ys = np.clip((y0 + t * np.sin(angle)).astype(int), 0, height - 1)
        xs = np.clip((x0 + t * np.cos(angle)).astype(int), 0, width - 1)
        image[ys, xs] = rng.uniform(0, 255, size=3)
    specks = rng.random((height, width)) < 0.01
    image[specks] = rng.uniform(0, 255, size=(int(specks.sum()), 3))
    return image


def _shape_mask(cls, yy, xx, cy, cx, radius, rng):
    dy, dx = yy - cy, xx - cx
    if cls == 1:  # disc
        return dy ** 2 + dx ** 2 <= radius ** 2
    if cls == 2:  # square (random rotation)
        angle = rng.uniform(0, np.pi / 2)
        u = np.abs(dx * np.cos(angle) + dy * np.sin(angle))
        v = np.abs(-dx * np.sin(angle) + dy * np.cos(angle))
        return np.maximum(u, v) <= radius * 0.85
    if cls == 3:  # triangle pointing up
        return (dy <= radius * 0.8) & (dy >= -radius) & \
               (np.abs(dx) <= (dy + radius) * 0.62)
    # cross
    arm = radius * 0.35
    return ((np.abs(dx) <= arm) & (np.abs(dy) <= radius)) | \
           ((np.abs(dy) <= arm) & (np.abs(dx) <= radius))


def _texture(cls, yy, xx, cy, cx, rng):
    """Intensity pattern in [0, 1] that identifies the class."""
    if cls == 1:  # concentric rings
        return 0.5 + 0.5 * np.cos(np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2) * rng.uniform(0.8, 1.1))
    if cls == 2:  # checkerboard
        period = rng.integers(4, 7)
        return (((yy // period) + (xx // period)) % 2).astype(np.float32)
    if cls == 3:  # diagonal stripes
        return 0.5 + 0.5 * np.sign(np.sin((yy + xx) * rng.uniform(0.6, 0.9)))
    # dots
    period = rng.integers(4, 6)
    return (((yy % period) < 2) & ((xx % period) < 2)).astype(np.float32)


def make_scene(rng, height, width):
    """One scene: uint8 image ``[H, W, 3]`` and uint8 mask ``[H, W]``."""
    image = _background(rng, height, width)
    mask = np.zeros((height, width), np.uint8)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    for _ in range(rng.integers(1, 4)):
        cls = int(rng.integers(1, len(CLASS_NAMES)))
        radius = rng.uniform(0.14, 0.28) * min(height, width)
        cy, cx = rng.uniform(radius * 0.5, [height - radius * 0.5, width - radius * 0.5])
        region = _shape_mask(cls, yy, xx, cy, cx, radius, rng)
        dark, light = rng.uniform(0, 90, size=3), rng.uniform(165, 255, size=3)
        pattern = _texture(cls, yy, xx, cy, cx, rng)[..., None]
        image[region] = (dark + pattern * (light - dark))[region]
        mask[region] = cls
    image += rng.normal(0, 6, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), mask


def _png(array) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _example_parts(scene):
    from datasets.conversion import ExampleParts

    image_id, image, mask = scene
    present = [int(c) for c in np.unique(mask) if c != 0]
    return ExampleParts(image_bytes=_png(image), image_format="png", image_id=image_id,
                        height=image.shape[0], width=image.shape[1], mask_png=_png(mask),
                        class_labels=present)


def generate(output_dir, num_train=480, num_val=120, labeled_fraction=8, height=96, width=96,
             seed=0, verbose=True):
    """Writes the dataset (records, ``dataset_info.json``, id lists) to ``output_dir``."""
    from datasets import conversion, dataset_info

    rng = np.random.default_rng(seed)
    os.makedirs(output_dir, exist_ok=True)
    scenes = {}
    for split, count in (("train", num_train), ("val", num_val)):
        scenes[split] = [(f"{split}_{i:05d}", *make_scene(rng, height, width))
                         for i in range(count)]
    train_ids = [scene[0] for scene in scenes["train"]]
    labeled = set(rng.choice(train_ids, size=max(1, num_train // labeled_fraction),
                             replace=False).tolist())
    by_id = {scene[0]: scene for scene in scenes["train"]}
    splits = {"train": scenes["train"], "val": scenes["val"],
              "labeled": [by_id[i] for i in train_ids if i in labeled],
              "unlabeled": [by_id[i] for i in train_ids if i not in labeled]}
    for split, items in splits.items():
        conversion.convert_split(output_dir, split, items, _example_parts, num_shards=2)
        conversion.write_id_list(os.path.join(output_dir, f"{split}.txt"),
                                 [item[0] for item in items])
        if verbose:
            print(f"  {split}: {len(items)} images", flush=True)
    info = dataset_info.folder_dataset_info(
        DATASET_NAME, len(CLASS_NAMES), IGNORE_LABEL, CLASS_NAMES,
        split_sizes={split: len(items) for split, items in splits.items()})
    info_path = os.path.join(output_dir, dataset_info.DATASET_INFO_FILENAME)
    if os.path.exists(info_path):
        os.remove(info_path)
    dataset_info.write_dataset_info_json(info, output_dir)
    params = dict(num_train=num_train, num_val=num_val, labeled_fraction=labeled_fraction,
                  height=height, width=width, seed=seed)
    with open(os.path.join(output_dir, PARAMS_FILE), "w") as f:
        json.dump(params, f)
    return output_dir


def ensure_demo_dataset(output_dir, **params):
    """Generates the dataset unless ``output_dir`` already holds it with these parameters."""
    params = {**DEFAULTS, **params}
    path = os.path.join(output_dir, PARAMS_FILE)
    if os.path.exists(path):
        with open(path) as f:
            if json.load(f) == params:
                return output_dir
    print(f"generating the synthetic demo dataset in {output_dir}", flush=True)
    return generate(output_dir, **params)


def main(argv):
    from absl import flags

    del argv
    f = flags.FLAGS
    generate(f.output_dir, f.num_train, f.num_val, f.labeled_fraction, f.height, f.width, f.seed)
    print(f"wrote the synthetic dataset to {f.output_dir}")


if __name__ == "__main__":
    from absl import app, flags

    flags.DEFINE_string("output_dir", "data/synthetic", "Where the records go.")
    flags.DEFINE_integer("num_train", DEFAULTS["num_train"], "Training scenes.")
    flags.DEFINE_integer("num_val", DEFAULTS["num_val"], "Validation scenes.")
    flags.DEFINE_integer("labeled_fraction", DEFAULTS["labeled_fraction"],
                         "1 in this many training scenes form the 'labeled' split.")
    flags.DEFINE_integer("height", DEFAULTS["height"], "Image height.")
    flags.DEFINE_integer("width", DEFAULTS["width"], "Image width.")
    flags.DEFINE_integer("seed", DEFAULTS["seed"], "Random seed.")
    app.run(main)
