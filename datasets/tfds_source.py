"""Examples from a TensorFlow Datasets dataset (``--dataset=tfds:NAME``).

Reads any TFDS dataset with an image feature and a segmentation-mask image
feature (e.g. ``oxford_iiit_pet``: ``image`` and ``segmentation_mask``)
prepared in ``data_dir`` (TFDS's default directory when None) and yields the
same per-example dicts as the TFRecord reader, so every pipeline in
``input_pipeline`` works on it unchanged. Mask values are used raw; the
dataset descriptor (``get_dataset_info("tfds:NAME", num_classes=...,
ignore_label=...)``) says what they mean.
"""

from typing import Dict, Optional

from absl import logging
import tensorflow as tf
import tensorflow_datasets as tfds

from datasets.dataset_info import DatasetInfo

_FILENAME_KEYS = ("file_name", "filename", "image/filename")


def _check_features(info: DatasetInfo, features) -> Optional[str]:
    """Validates the feature keys; returns the filename key or None."""
    keys = sorted(features.keys())
    for role, key in (("image", info.tfds_image_key),
                      ("mask", info.tfds_mask_key)):
        if key not in features:
            raise ValueError(
                f"TFDS dataset {info.tfds_name!r} has no {role} feature {key!r}; "
                f"its features are {keys} (set tfds_image_key / tfds_mask_key)")
    filename_key = next((k for k in _FILENAME_KEYS if k in features), None)
    if filename_key is None:
        logging.warning("TFDS dataset %s has none of the features %s: examples "
                        "get an empty filename", info.tfds_name, _FILENAME_KEYS)
    return filename_key


def tfds_examples(info: DatasetInfo,
                  split: str,
                  data_dir: Optional[str] = None,
                  *,
                  shuffle_files: bool = False,
                  seed: Optional[int] = None,
                  input_context: Optional[tf.distribute.InputContext] = None
                  ) -> tf.data.Dataset:
    """A dataset of decoded example dicts from TFDS.

    Each element is ``{"image": uint8 [H, W, 3], "label": int32 [H, W, 1],
    "has_label": True, "class_labels": int64 [0], "filename": string}``.

    Args:
      info: a ``tfds:NAME`` descriptor.
      split: TFDS split (slicing syntax allowed, e.g. ``train[:80%]``).
      data_dir: TFDS data directory (None: TFDS's default).
      shuffle_files: shuffle the file order (training).
      seed: shuffle seed.
      input_context: with several input pipelines, each reads an even,
        disjoint part of the split (``tfds.even_splits``).
    """
    if not info.is_tfds:
        raise ValueError(f"dataset {info.name!r} is not a tfds:NAME dataset")
    builder = tfds.builder(info.tfds_name, data_dir=data_dir)
    filename_key = _check_features(info, builder.info.features)
    if input_context is not None and input_context.num_input_pipelines > 1:
        split = tfds.even_splits(split, n=input_context.num_input_pipelines)[
            input_context.input_pipeline_id]
    read_config = tfds.ReadConfig(shuffle_seed=seed)
    dataset = builder.as_dataset(split=split, shuffle_files=shuffle_files,
                                 read_config=read_config)

    def convert(example: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        image = example[info.tfds_image_key]
        if image.shape.rank != 3 or image.shape[-1] not in (None, 1, 3):
            raise ValueError(f"TFDS image feature {info.tfds_image_key!r} has shape "
                             f"{image.shape}, expected [H, W, 3]")
        image = tf.cast(image, tf.uint8)
        if image.shape[-1] == 1:
            image = tf.image.grayscale_to_rgb(image)
        mask = example[info.tfds_mask_key]
        if mask.shape.rank == 2:
            mask = mask[..., None]
        if mask.shape.rank != 3 or mask.shape[-1] != 1:
            raise ValueError(f"TFDS mask feature {info.tfds_mask_key!r} has shape "
                             f"{mask.shape}, expected [H, W] or [H, W, 1]")
        if filename_key is None:
            filename = tf.constant("")
        else:
            filename = example[filename_key]
            if filename.dtype != tf.string:
                filename = tf.strings.as_string(filename)
        check = tf.debugging.Assert(
            tf.reduce_all(tf.shape(mask)[:2] == tf.shape(image)[:2]),
            [f"TFDS {info.tfds_name}: mask size differs from image size; "
             "filename, mask shape, image shape:", filename, tf.shape(mask),
             tf.shape(image)])
        with tf.control_dependencies([check]):
            mask = tf.identity(mask)
        return {
            "image": image,
            "label": tf.cast(mask, tf.int32),
            "has_label": tf.constant(True),
            "class_labels": tf.zeros([0], tf.int64),
            "filename": filename,
        }

    return dataset.map(convert, num_parallel_calls=tf.data.AUTOTUNE)
