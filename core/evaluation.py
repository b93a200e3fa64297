"""Evaluation: a streaming confusion matrix over a whole split.

For each image the class probabilities are averaged over ``eval_scales`` (the
image resized bilinearly by each scale, logits resized back to the input size)
and, with ``add_flipped_images``, over left-right flips; the prediction is the
argmax, compared with the label on the original (un-padded) extent, ignore
label excluded. Reports mIoU, per-class IoU and pixel accuracy; optionally
(``per_image=True``) the confusion matrix of every image with its id, which
``write_per_image_confusion`` saves as ``.npz`` (bootstrap intervals over
images: ``benchmarks/study_runner``).
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import tensorflow as tf

from core import metrics as metrics_lib
from core.layers import resize_bilinear_align_corners


def multi_scale_probabilities(predict_fn, images, eval_scales=(1.0,), add_flipped_images=False):
    """Mean softmax probabilities at the input size over scales (and flips).

    ``predict_fn(images) -> probabilities at the size of images``.
    """
    size = tf.shape(images)[1:3]
    total = 0.0
    count = 0
    for scale in eval_scales:
        if scale == 1.0:
            scaled = images
        else:
            scaled_size = tf.cast((tf.cast(size, tf.float32) - 1.0) * scale + 1.0, tf.int32)
            scaled = resize_bilinear_align_corners(images, scaled_size)
        for flip in ((False, True) if add_flipped_images else (False,)):
            inputs = tf.reverse(scaled, axis=[2]) if flip else scaled
            probabilities = predict_fn(inputs)
            if flip:
                probabilities = tf.reverse(probabilities, axis=[2])
            total += resize_bilinear_align_corners(probabilities, size)
            count += 1
    return total / count


def network_predict_fn(network):
    def predict(images):
        logits = network(images, training=False)["logits"]
        logits = resize_bilinear_align_corners(tf.cast(logits, tf.float32), tf.shape(images)[1:3])
        return tf.nn.softmax(logits, axis=-1)

    return predict


def saved_model_predict_fn(loaded):
    signature = loaded.signatures.get("predict_float")
    if signature is not None:
        return lambda images: signature(images=tf.cast(images, tf.float32))["probabilities"]
    serve = loaded.signatures["serving_default"]
    return lambda images: serve(images=tf.cast(tf.round(images), tf.uint8))["probabilities"]


def inside_original_extent(batch):
    """``[N, H, W, 1]`` bool: True inside each image's original ``height`` x
    ``width``; pixels beyond it are the eval crop's padding."""
    shape = tf.shape(batch["label"])
    rows = tf.range(shape[1])[None, :, None, None]
    cols = tf.range(shape[2])[None, None, :, None]
    return tf.logical_and(rows < tf.cast(batch["height"], tf.int32)[:, None, None, None],
                          cols < tf.cast(batch["width"], tf.int32)[:, None, None, None])


def per_image_confusion_counts(labels, predictions, num_classes, ignore_label):
    """``[N, C, C]`` float32 counts of each image of a batch (rows = label,
    columns = prediction; ignored pixels left out)."""
    labels = tf.cast(labels, tf.int32)
    batch = tf.shape(labels)[0]
    labels = tf.reshape(labels, [batch, -1])
    predictions = tf.reshape(tf.cast(predictions, tf.int32), [batch, -1])
    valid = tf.logical_and(tf.not_equal(labels, ignore_label),
                           tf.logical_and(labels >= 0, labels < num_classes))
    cells = num_classes * num_classes
    image = tf.range(batch)[:, None]
    index = tf.where(valid, image * cells + labels * num_classes + predictions, batch * cells)
    counts = tf.math.unsorted_segment_sum(tf.ones_like(index, tf.float32), index,
                                          batch * cells + 1)
    return tf.reshape(counts[:-1], [batch, num_classes, num_classes])


def evaluate(predict_fn, dataset, num_classes, ignore_label, *, eval_scales=(1.0,),
             add_flipped_images=False, strategy=None, log_every=100,
             per_image=False, step_cache=None) -> dict:
    """Confusion matrix over ``dataset`` (``datasets.input_pipeline.eval_dataset``).

    With ``per_image``, the result also holds ``per_image_confusion`` (int64
    ``[images, C, C]``, in the order evaluated, summing to the whole split's
    matrix) and ``image_ids`` (the records' filenames), of the images of this
    process's replicas.

    ``step_cache``: a dict kept across calls with the same ``predict_fn`` and
    settings (e.g. several checkpoints restored into one network) to reuse the
    traced evaluation step instead of tracing it again.
    """
    strategy = strategy or tf.distribute.get_strategy()
    key = (id(predict_fn), id(strategy), num_classes, ignore_label, tuple(eval_scales),
           add_flipped_images, per_image)  # the cached step keeps both objects alive
    if step_cache is not None and key in step_cache:
        step = step_cache[key]
    else:
        step = _evaluation_step(predict_fn, strategy, num_classes, ignore_label, eval_scales,
                                add_flipped_images, per_image)
        if step_cache is not None:
            step_cache[key] = step

    confusion = np.zeros((num_classes, num_classes), np.float64)
    image_confusions, image_ids = [], []
    start = time.monotonic()
    images = 0
    for batch in dataset:
        if per_image:
            counts, per_replica, names = step(batch)
            for matrices, ids in zip(strategy.experimental_local_results(per_replica),
                                     strategy.experimental_local_results(names)):
                image_confusions.append(matrices.numpy().astype(np.int64))
                image_ids.extend(i.decode() if isinstance(i, bytes) else str(i)
                                 for i in ids.numpy())
        else:
            counts = step(batch)
        confusion += counts.numpy()
        images += 1
        if log_every and images % log_every == 0:
            print(f"  evaluated {images} batches ({time.monotonic() - start:.0f} s)", flush=True)
    miou, iou = metrics_lib.iou_from_confusion(confusion)
    result = dict(miou=miou, per_class_iou=[None if np.isnan(x) else float(x) for x in iou],
                  pixel_accuracy=metrics_lib.pixel_accuracy_from_confusion(confusion),
                  num_batches=images, confusion_matrix=confusion.astype(np.int64).tolist(),
                  eval_scales=list(eval_scales), add_flipped_images=add_flipped_images)
    if per_image:
        result["per_image_confusion"] = (
            np.concatenate(image_confusions) if image_confusions
            else np.zeros((0, num_classes, num_classes), np.int64))
        result["image_ids"] = image_ids
    return result


def _evaluation_step(predict_fn, strategy, num_classes, ignore_label, eval_scales,
                     add_flipped_images, per_image):
    """The traced step of ``evaluate``: a batch -> its summed confusion counts (and,
    with ``per_image``, the per-replica per-image counts and image ids)."""

    def replica_step(batch):
        probabilities = multi_scale_probabilities(predict_fn, batch["image"], eval_scales,
                                                  add_flipped_images)
        predictions = tf.argmax(probabilities, axis=-1, output_type=tf.int32)[..., None]
        labels = tf.where(inside_original_extent(batch), tf.cast(batch["label"], tf.int32),
                          ignore_label)
        if per_image:
            counts = per_image_confusion_counts(labels, predictions, num_classes,
                                                ignore_label)
            return tf.reduce_sum(counts, axis=0), counts, batch["filename"]
        return metrics_lib.confusion_counts(labels, predictions, num_classes, ignore_label)

    @tf.function(reduce_retracing=True)
    def step(batch):
        outputs = strategy.run(replica_step, args=(batch,))
        if not per_image:
            return strategy.reduce(tf.distribute.ReduceOp.SUM, outputs, axis=None)
        counts, images, names = outputs
        return strategy.reduce(tf.distribute.ReduceOp.SUM, counts, axis=None), images, names

    return step


def write_per_image_confusion(path: str, image_ids, confusion, **metadata):
    """Saves ``image_ids`` (strings) and ``confusion`` (``[images, C, C]``) as an
    ``.npz`` with arrays ``image_ids`` and ``confusion`` (and each ``metadata``
    value as a string array), atomically (temporary name, then rename)."""
    confusion = np.asarray(confusion, np.int64)
    if len(image_ids) != len(confusion):
        raise ValueError(f"{len(image_ids)} image ids for {len(confusion)} confusion matrices")
    directory = os.path.dirname(path)
    if directory:
        tf.io.gfile.makedirs(directory)
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "wb") as f:
        np.savez_compressed(f, image_ids=np.asarray(list(image_ids), dtype=str),
                            confusion=confusion,
                            **{k: np.asarray(str(v)) for k, v in metadata.items()})
    os.replace(temporary, path)


def read_per_image_confusion(path: str) -> dict:
    """``{"image_ids": [...], "confusion": int64 [images, C, C], **metadata}`` of a
    file written by ``write_per_image_confusion``."""
    with np.load(path) as data:
        result = {k: str(data[k]) for k in data.files if k not in ("image_ids", "confusion")}
        result.update(image_ids=[str(i) for i in data["image_ids"]],
                      confusion=data["confusion"].astype(np.int64))
    return result


def evaluate_network(network, info, dataset_dir, split, *, eval_crop_size=None,
                     eval_scales=(1.0,), add_flipped_images=False, batch_size=1,
                     strategy=None) -> dict:
    """Evaluates a Keras network on ``split`` of a record dataset."""
    from datasets.input_pipeline import eval_dataset

    strategy = strategy or tf.distribute.get_strategy()
    dataset = strategy.distribute_datasets_from_function(
        lambda context: eval_dataset(info, dataset_dir, split, eval_crop_size, batch_size,
                                     input_context=context))
    result = evaluate(network_predict_fn(network), dataset, info.num_classes,
                      info.ignore_label, eval_scales=eval_scales,
                      add_flipped_images=add_flipped_images, strategy=strategy)
    result.update(split=split, dataset=info.name,
                  eval_crop_size=list(eval_crop_size) if eval_crop_size else None)
    return result


def parse_crop(values, default=None):
    """``["513", "513"]`` -> (513, 513); ``["513"]`` -> (513, 513); ``["none"]`` ->
    None (whole images); None -> ``default``. Raises ValueError otherwise."""
    if values is None:
        return default
    if [str(v).lower() for v in values] == ["none"]:
        return None
    try:
        crop = [int(v) for v in values]
    except ValueError as error:
        raise ValueError(f"crop must be height,width integers or none, got {values}") from error
    if len(crop) == 1:
        crop *= 2
    if len(crop) != 2 or min(crop) < 1:
        raise ValueError(f"crop must be height,width, got {values}")
    return tuple(crop)


def format_table(result: dict, class_names) -> str:
    lines = [f"{'class':<24s} {'IoU':>8s}"]
    for name, iou in zip(class_names, result["per_class_iou"]):
        lines.append(f"{name:<24s} {'-' if iou is None else f'{100 * iou:8.2f}':>8s}")
    lines.append(f"{'mIoU':<24s} {100 * result['miou']:8.2f}")
    lines.append(f"{'pixel accuracy':<24s} {100 * result['pixel_accuracy']:8.2f}")
    return "\n".join(lines)


def write_result(result: dict, path: str):
    """Writes the result JSON atomically."""
    directory = os.path.dirname(path)
    if directory:
        tf.io.gfile.makedirs(directory)
    with open(path + ".tmp", "w") as f:
        json.dump(result, f, indent=1)
    os.replace(path + ".tmp", path)
