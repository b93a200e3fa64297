"""The TFRecord format: DeepLab's feature keys, file naming, counting.

Every converter writes one ``tf.train.Example`` per image with DeepLab's keys
(``image/encoded``, ``image/filename`` (the id, no extension),
``image/format``, ``image/height``, ``image/width``,
``image/segmentation/class/encoded`` (PNG),
``image/segmentation/class/format``) plus, optionally,
``image/class_labels`` (int64 list of the image-level class ids, for the
weakly-labeled mode). Records written by DeepLab's or the reference
implementation's scripts therefore read unchanged.

Files are ``{dir}/{split}-{shard:05d}-of-{num_shards:05d}.tfrecord``; readers
glob ``{split}-*``. Converters also record the number of examples per split in
``{dir}/splits.json`` so the reader can check split sizes without a pass over
the data.
"""

import glob
import json
import os
import re
from typing import Dict, Iterable, List, Optional

import tensorflow as tf

IMAGE_ENCODED = "image/encoded"
IMAGE_FILENAME = "image/filename"
IMAGE_FORMAT = "image/format"
IMAGE_HEIGHT = "image/height"
IMAGE_WIDTH = "image/width"
MASK_ENCODED = "image/segmentation/class/encoded"
MASK_FORMAT = "image/segmentation/class/format"
CLASS_LABELS = "image/class_labels"

SPLITS_JSON = "splits.json"
_SPLIT_NAME_RE = re.compile(r"^[A-Za-z0-9_.]+$")


def check_split_name(split: str) -> str:
    """Returns ``split`` if usable in file names, else raises ValueError.

    A dash would make the reader's ``{split}-*`` glob match other splits' files.
    """
    if not _SPLIT_NAME_RE.match(split):
        raise ValueError(
            f"split name {split!r} must contain only letters, digits, '_' and "
            "'.' (readers glob '{split}-*')")
    return split


def shard_filename(output_dir: str, split: str, shard: int,
                   num_shards: int) -> str:
    """Path of one shard: ``{output_dir}/{split}-{shard:05d}-of-{n:05d}.tfrecord``."""
    return os.path.join(
        output_dir, f"{split}-{shard:05d}-of-{num_shards:05d}.tfrecord")


def split_files(dataset_dir: str, split: str) -> List[str]:
    """Sorted record files of ``split`` (glob ``{split}-*``).

    Raises:
      FileNotFoundError: naming the pattern, when nothing matches.
    """
    check_split_name(split)
    pattern = os.path.join(dataset_dir, f"{split}-*")
    files = sorted(glob.glob(pattern))
    if not files:
        raise FileNotFoundError(
            f"no records for split {split!r}: nothing matches {pattern}")
    return files


def _bytes_feature(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int64_feature(values: Iterable[int]) -> tf.train.Feature:
    return tf.train.Feature(
        int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def make_example(image_bytes: bytes,
                 image_format: str,
                 image_id: str,
                 height: int,
                 width: int,
                 mask_png: Optional[bytes] = None,
                 class_labels: Optional[Iterable[int]] = None
                 ) -> tf.train.Example:
    """Builds the ``tf.train.Example`` of one image in DeepLab's format.

    Args:
      image_bytes: encoded image (JPEG or PNG) exactly as stored.
      image_format: ``"jpeg"`` or ``"png"``.
      image_id: the id written to ``image/filename`` (no extension).
      height, width: image size in pixels.
      mask_png: the 8-bit single-channel PNG of raw class values, or None for a
        truly unlabeled image (no mask features are written then).
      class_labels: optional image-level class ids (``image/class_labels``).
    """
    feature = {
        IMAGE_ENCODED: _bytes_feature(image_bytes),
        IMAGE_FILENAME: _bytes_feature(image_id.encode("utf-8")),
        IMAGE_FORMAT: _bytes_feature(image_format.encode("utf-8")),
        IMAGE_HEIGHT: _int64_feature([height]),
        IMAGE_WIDTH: _int64_feature([width]),
    }
    if mask_png is not None:
        feature[MASK_ENCODED] = _bytes_feature(mask_png)
        feature[MASK_FORMAT] = _bytes_feature(b"png")
    if class_labels is not None:
        feature[CLASS_LABELS] = _int64_feature(sorted(class_labels))
    return tf.train.Example(features=tf.train.Features(feature=feature))


_PARSE_SPEC = {
    IMAGE_ENCODED: tf.io.FixedLenFeature((), tf.string, default_value=""),
    IMAGE_FILENAME: tf.io.FixedLenFeature((), tf.string, default_value=""),
    IMAGE_FORMAT: tf.io.FixedLenFeature((), tf.string, default_value="jpeg"),
    IMAGE_HEIGHT: tf.io.FixedLenFeature((), tf.int64, default_value=0),
    IMAGE_WIDTH: tf.io.FixedLenFeature((), tf.int64, default_value=0),
    MASK_ENCODED: tf.io.FixedLenFeature((), tf.string, default_value=""),
    MASK_FORMAT: tf.io.FixedLenFeature((), tf.string, default_value="png"),
    CLASS_LABELS: tf.io.VarLenFeature(tf.int64),
}


def decode_image(encoded: tf.Tensor, channels: int) -> tf.Tensor:
    """Decodes a JPEG or PNG string to uint8 ``[H, W, channels]``.

    JPEGs are decoded with the accurate integer DCT, so the pixels equal
    Pillow's (and libjpeg's default) decoding exactly.
    """
    image = tf.cond(
        tf.io.is_jpeg(encoded),
        lambda: tf.io.decode_jpeg(encoded, channels=channels,
                                  dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_png(encoded, channels=channels))
    image.set_shape([None, None, channels])
    return image


def parse_record(serialized: tf.Tensor, ignore_label: int) -> Dict[str, tf.Tensor]:
    """Parses and decodes one serialized Example.

    Returns a dict with ``image`` (uint8 [H, W, 3]), ``label`` (int32 [H, W, 1];
    all ``ignore_label`` when the record has no mask), ``has_label`` (bool),
    ``class_labels`` (int64 [n], possibly empty) and ``filename`` (string).
    """
    features = tf.io.parse_single_example(serialized, _PARSE_SPEC)
    image = decode_image(features[IMAGE_ENCODED], channels=3)
    mask_encoded = features[MASK_ENCODED]
    has_label = tf.strings.length(mask_encoded) > 0
    image_shape = tf.shape(image)

    def _decode_mask():
        mask = tf.cast(decode_image(mask_encoded, channels=1), tf.int32)
        check = tf.debugging.Assert(
            tf.reduce_all(tf.shape(mask)[:2] == image_shape[:2]),
            ["mask size differs from image size in record; id, mask shape, "
             "image shape:", features[IMAGE_FILENAME], tf.shape(mask),
             image_shape])
        with tf.control_dependencies([check]):
            return tf.identity(mask)

    label = tf.cond(
        has_label, _decode_mask,
        lambda: tf.fill([image_shape[0], image_shape[1], 1],
                        tf.constant(ignore_label, tf.int32)))
    return {
        "image": image,
        "label": label,
        "has_label": has_label,
        "class_labels": tf.sparse.to_dense(features[CLASS_LABELS]),
        "filename": features[IMAGE_FILENAME],
    }


def check_records_have_class_labels(dataset_dir: str, split: str) -> None:
    """Raises ValueError unless the first record of ``split`` carries
    ``image/class_labels`` (converters write it with ``--class_labels``; an
    empty list, an image without foreground class, counts as carrying it)."""
    first = split_files(dataset_dir, split)[0]
    for serialized in tf.data.TFRecordDataset([first]).take(1):
        example = tf.train.Example.FromString(serialized.numpy())
        if CLASS_LABELS not in example.features.feature:
            raise ValueError(
                f"split {split!r} in {dataset_dir} has no image-level labels: {first} "
                f"lacks {CLASS_LABELS} (convert with --class_labels, or derive the labels "
                f"from the masks with image_label_source='crop')")
        return
    raise ValueError(f"split {split!r} in {dataset_dir}: {first} holds no record")


def read_splits_json(dataset_dir: str) -> Dict[str, dict]:
    """Returns the content of ``{dataset_dir}/splits.json`` ({} when absent)."""
    path = os.path.join(dataset_dir, SPLITS_JSON)
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def update_splits_json(output_dir: str, split: str, num_examples: int,
                       num_shards: int, num_skipped: int) -> None:
    """Records the size of ``split`` in ``{output_dir}/splits.json`` (atomic)."""
    content = read_splits_json(output_dir)
    content[split] = {"num_examples": num_examples, "num_shards": num_shards,
                      "num_skipped": num_skipped}
    path = os.path.join(output_dir, SPLITS_JSON)
    tmp_path = path + f".tmp-{os.getpid()}"
    with open(tmp_path, "w") as f:
        json.dump(content, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp_path, path)


def count_records(dataset_dir: str, split: str) -> int:
    """Number of examples in ``split``.

    Uses ``splits.json`` when it describes exactly the shard files present,
    otherwise counts the records (a pass over the raw bytes, no decoding).
    """
    files = split_files(dataset_dir, split)
    entry = read_splits_json(dataset_dir).get(split)
    if entry is not None:
        expected = [shard_filename(dataset_dir, split, i, entry["num_shards"])
                    for i in range(entry["num_shards"])]
        if files == expected:
            return int(entry["num_examples"])
    dataset = tf.data.TFRecordDataset(files)
    return int(dataset.reduce(tf.constant(0, tf.int64), lambda n, _: n + 1))
