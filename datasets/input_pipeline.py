"""tf.data input pipelines: labeled, unlabeled (weak/strong), weakly, eval.

The batches follow ``docs/design.md``:

* ``labeled_dataset``: ``image`` [B,H,W,3] float32 in [0, 255], ``label``
  [B,H,W,1] int32 (ignore label on padding), ``valid_mask`` [B,H,W,1]
  float32, ``class_presence`` [B,C-1] float32 (foreground classes in the
  crop).
* ``unlabeled_dataset``: ``weak_image``, ``strong_image`` (pixel-aligned),
  ``valid_mask``, ``strong_valid_mask`` (valid mask minus the CutOut square),
  ``monitor_label`` (the mask when records have one, else all ignore label;
  for monitoring only, never for a loss) and, with ``weakly=True``,
  ``image_labels`` [B,C-1] float32.
* ``eval_dataset``: ``image``, ``label`` padded to the eval crop (or whole
  images with batch 1), ``height``, ``width`` (original size), ``filename``.

Reading: shard files (or records, when there are fewer files than input
pipelines) per ``tf.distribute.InputContext``; shuffle files, interleave them
in parallel, shuffle records, repeat, decode and augment in a parallel map,
batch with the per-replica batch size, prefetch. With a ``seed`` every random
choice is a stateless op seeded by the seed and the example's position in the
stream, the epochs' orders are seeded by the seed and the epoch, and the
pipeline runs in deterministic order: equal seeds give equal batches, and
``start_step`` resumes the stream where an uninterrupted run would be.

``batch_size`` is always the GLOBAL batch size; under
``strategy.distribute_datasets_from_function`` each input pipeline produces
``batch_size / num_replicas`` examples per batch.
"""

from typing import Callable, List, Optional, Sequence, Tuple, Union

from absl import logging
import tensorflow as tf

from datasets import augment
from datasets import records
from datasets.dataset_info import DatasetInfo

CropSize = Union[int, Sequence[int]]
# Where weakly mode's image-level labels come from (see unlabeled_dataset).
IMAGE_LABEL_SOURCES = ("crop", "record")
DEFAULT_SHUFFLE_BUFFER = 512


def _crop_hw(crop_size: CropSize, name: str = "crop_size") -> Tuple[int, int]:
    """Normalises an int or (height, width) to a pair of positive ints."""
    if isinstance(crop_size, int):
        crop_size = (crop_size, crop_size)
    crop_size = tuple(int(c) for c in crop_size)
    if len(crop_size) != 2 or min(crop_size) < 1:
        raise ValueError(f"{name} must be a positive int or (height, width), "
                         f"got {crop_size}")
    return crop_size


def per_replica_batch_size(batch_size: int,
                           input_context: Optional[tf.distribute.InputContext]
                           ) -> int:
    """The batch one input pipeline produces for a GLOBAL ``batch_size``.

    Raises:
      ValueError: the global batch is not divisible by the number of replicas.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if input_context is None:
        return batch_size
    replicas = input_context.num_replicas_in_sync
    if batch_size % replicas:
        raise ValueError(
            f"global batch_size {batch_size} is not divisible by the "
            f"{replicas} replicas in sync")
    return input_context.get_per_replica_batch_size(batch_size)


def check_split_size(info: DatasetInfo, dataset_dir: str, split: str) -> int:
    """Counts the split's records; warns when it differs from the known size.

    Returns:
      The number of records.
    """
    count = records.count_records(dataset_dir, split)
    expected = info.split_sizes.get(split)
    if expected is not None and count != expected:
        logging.warning(
            "dataset %s split %s has %d records in %s, but the known size is %d",
            info.name, split, count, dataset_dir, expected)
    return count


def _shard(files: List[str], input_context: Optional[tf.distribute.InputContext]
           ) -> Tuple[List[str], Optional[Tuple[int, int]]]:
    """This input pipeline's files, and ``(pipelines, id)`` when records (not
    files) must be sharded because there are fewer files than pipelines."""
    if input_context is None or input_context.num_input_pipelines == 1:
        return files, None
    pipelines, index = input_context.num_input_pipelines, input_context.input_pipeline_id
    if len(files) >= pipelines:
        return files[index::pipelines], None
    return files, (pipelines, index)


def _pipeline_record_count(files: List[str], record_shard: Optional[Tuple[int, int]]) -> int:
    """Records this input pipeline reads per epoch (a raw pass over its files)."""
    total = int(tf.data.TFRecordDataset(files).reduce(tf.constant(0, tf.int64),
                                                      lambda n, _: n + 1))
    if record_shard is None:
        return total
    pipelines, index = record_shard
    return len(range(index, total, pipelines))


def _permuted(values: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """``values`` in a random order drawn statelessly from ``seed`` ([2] int)."""
    order = tf.argsort(tf.random.stateless_uniform([tf.shape(values)[0]], seed))
    return tf.gather(values, order)


def _window_shuffled(dataset: tf.data.Dataset, window: int, seed: tf.Tensor
                     ) -> tf.data.Dataset:
    """Each run of ``window`` consecutive elements in a random order drawn from
    ``seed`` and the run's index (stateless, so a function of the position;
    ``Dataset.shuffle`` takes no tensor seed once a global seed is set)."""

    def permute(index, elements):
        run_seed = tf.random.experimental.stateless_fold_in(seed, index)
        return tf.data.Dataset.from_tensor_slices(_permuted(elements, run_seed))

    return dataset.batch(window).enumerate().flat_map(permute)


def _record_examples(info: DatasetInfo, dataset_dir: str, split: str, *,
                     training: bool, seed: Optional[int],
                     input_context: Optional[tf.distribute.InputContext],
                     shuffle_buffer_size: int, start_index: int = 0) -> tf.data.Dataset:
    """Parsed records of a split: sharded, and for training shuffled, repeated.

    Each input pipeline reads every n-th file, or, with fewer files than
    pipelines, every n-th record of the same (unshuffled) file sequence, so the
    pipelines see disjoint examples; records are shuffled after sharding.

    Training with a ``seed``: epoch e of this pipeline reads its files in an
    order seeded by (seed, e) and shuffles each run of ``shuffle_buffer_size``
    records (the whole epoch when it is smaller) in an order seeded by
    (seed, e, run), never across epochs, so the stream of records is a
    function of the seed and the position alone. ``start_index`` starts it
    at that position (``start_index // records`` epochs and the rest of one
    epoch skipped as raw records, before any decoding): a resumed run reads what
    the uninterrupted run would have read next.
    """
    files, record_shard = _shard(records.split_files(dataset_dir, split), input_context)
    cycle_length = min(len(files), 16)

    def read(file_names):
        dataset = file_names.interleave(tf.data.TFRecordDataset, cycle_length=cycle_length,
                                        block_length=1, num_parallel_calls=tf.data.AUTOTUNE)
        if record_shard is not None:
            dataset = dataset.shard(*record_shard)
        return dataset

    def parse(dataset):
        return dataset.map(lambda s: records.parse_record(s, info.ignore_label),
                           num_parallel_calls=tf.data.AUTOTUNE)

    file_names = tf.data.Dataset.from_tensor_slices(files)
    if not training:
        return parse(read(file_names))
    if seed is None:  # nondeterministic: one stream shuffled across epochs
        if record_shard is None:
            file_names = file_names.shuffle(len(files), reshuffle_each_iteration=True)
        return parse(read(file_names.repeat()).shuffle(shuffle_buffer_size,
                                                       reshuffle_each_iteration=True))

    def epoch(index):
        epoch_seed = tf.stack([tf.constant(seed, tf.int64), index])
        file_seed, record_seed = tf.unstack(tf.random.experimental.stateless_split(
            epoch_seed, 2))
        names = file_names
        if record_shard is None:  # record sharding needs the same file order everywhere
            names = tf.data.Dataset.from_tensor_slices(_permuted(tf.constant(files), file_seed))
        return _window_shuffled(read(names), shuffle_buffer_size, record_seed)

    first_epoch, offset = 0, 0
    if start_index:
        first_epoch, offset = divmod(start_index, _pipeline_record_count(files, record_shard))
    dataset = tf.data.Dataset.range(first_epoch, tf.int64.max).flat_map(epoch)
    return parse(dataset.skip(offset))


def decoded_examples(info: DatasetInfo, dataset_dir: Optional[str],
                     split: str, *, training: bool, seed: Optional[int] = None,
                     input_context: Optional[tf.distribute.InputContext] = None,
                     shuffle_buffer_size: int = DEFAULT_SHUFFLE_BUFFER,
                     check_size: bool = True, start_index: int = 0) -> tf.data.Dataset:
    """Decoded examples of a split, from TFRecords or TFDS.

    Elements: ``image`` uint8 [H,W,3], ``label`` int32 [H,W,1] (all ignore label
    when the record has no mask), ``has_label``, ``class_labels`` int64 [n],
    ``filename``. Training: shuffled and repeated forever; with a seed, from
    position ``start_index`` of the seeded stream (TFRecords only).
    """
    if info.is_tfds:
        if start_index:
            raise ValueError(f"{info.name}: resuming a TFDS input stream at a position is "
                             f"not supported (start_index={start_index})")
        from datasets import tfds_source  # pylint: disable=g-import-not-at-top
        dataset = tfds_source.tfds_examples(
            info, split, dataset_dir, shuffle_files=training, seed=seed,
            input_context=input_context)
        if training:
            dataset = dataset.repeat().shuffle(shuffle_buffer_size, seed=seed,
                                               reshuffle_each_iteration=True)
        return dataset
    if dataset_dir is None:
        raise ValueError(f"dataset {info.name!r} needs a dataset_dir of records")
    if check_size:
        check_split_size(info, dataset_dir, split)
    return _record_examples(info, dataset_dir, split, training=training,
                            seed=seed, input_context=input_context,
                            shuffle_buffer_size=shuffle_buffer_size,
                            start_index=start_index)


# Distinguishes the per-example seeds of the branches, so a labeled and an
# unlabeled pipeline built with the same seed do not draw the same crops.
_LABELED_BRANCH, _UNLABELED_BRANCH = 0, 1


def _with_example_seeds(dataset: tf.data.Dataset, seed: Optional[int],
                        input_context: Optional[tf.distribute.InputContext],
                        branch: int, start_index: int = 0) -> tf.data.Dataset:
    """Pairs each example with a [2] int64 seed for the stateless ops.

    With a ``seed``: the stateless fold of the example's position in the stream
    (from ``start_index``) into (seed, stream), where the stream identifies the
    input pipeline and the branch, so an example's augmentation depends on the
    seed and its position only. Without: ``tf.data.Dataset.random()`` paired
    with the stream.
    """
    pipeline_id = input_context.input_pipeline_id if input_context else 0
    stream = tf.constant(pipeline_id * 2 + branch, tf.int64)
    if seed is None:
        return tf.data.Dataset.zip((dataset, tf.data.Dataset.random())).map(
            lambda example, r: (example, tf.stack([r, stream])))
    base = tf.stack([tf.constant(seed, tf.int64), stream])
    positions = tf.data.Dataset.range(start_index, tf.int64.max)
    return tf.data.Dataset.zip((dataset, positions)).map(
        lambda example, i: (example,
                            tf.random.experimental.stateless_fold_in(base, i)))


def _start_index(start_step: int, batch_size: int,
                 input_context: Optional[tf.distribute.InputContext],
                 seed: Optional[int], training: bool) -> int:
    """Examples this input pipeline produced before ``start_step``: each step
    takes ``batch_size / pipelines`` of them (one per-replica batch for each
    replica the pipeline feeds)."""
    if start_step < 0:
        raise ValueError(f"start_step must be >= 0, got {start_step}")
    if start_step and (seed is None or not training):
        raise ValueError("start_step needs a seeded training pipeline (the stream of an "
                         "unseeded one is not a function of the position)")
    pipelines = input_context.num_input_pipelines if input_context else 1
    return start_step * (batch_size // pipelines)


def _finish(dataset: tf.data.Dataset, fn: Callable, batch_size: int,
            drop_remainder: bool, seed: Optional[int]) -> tf.data.Dataset:
    """Parallel map, batch, prefetch, determinism options."""
    dataset = dataset.map(fn, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    dataset = dataset.prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = seed is not None
    return dataset.with_options(options)


def _check_scales(min_scale_factor, max_scale_factor, scale_factor_step_size):
    """Raises ValueError for an invalid scale range (before any tracing)."""
    if not 0 < min_scale_factor <= max_scale_factor:
        raise ValueError(
            f"need 0 < min_scale_factor <= max_scale_factor, got "
            f"{min_scale_factor}, {max_scale_factor}")
    if scale_factor_step_size < 0:
        raise ValueError(f"scale_factor_step_size must be >= 0, got "
                         f"{scale_factor_step_size}")


def _pad_to_fixed(image: tf.Tensor, label: tf.Tensor, filename: tf.Tensor,
                  crop: Tuple[int, int], ignore_label: int, what: str
                  ) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Pads bottom/right to exactly ``crop``; images larger than it fail.

    Raises (at iteration time) InvalidArgumentError naming the image id, its
    size and the crop.
    """
    shape = tf.shape(image)
    check = tf.debugging.Assert(
        (shape[0] <= crop[0]) & (shape[1] <= crop[1]),
        [f"image larger than the {what} {crop[0]}x{crop[1]} (HxW); id, height, "
         "width:", filename, shape[0], shape[1]])
    with tf.control_dependencies([check]):
        image = tf.identity(image)
    image, label, valid = augment.pad_to_at_least(image, label, crop[0],
                                                  crop[1], ignore_label)
    image.set_shape([crop[0], crop[1], 3])
    label.set_shape([crop[0], crop[1], 1])
    valid.set_shape([crop[0], crop[1], 1])
    return image, label, valid


def labeled_dataset(info: DatasetInfo,
                    dataset_dir: Optional[str],
                    split: str,
                    crop_size: CropSize,
                    batch_size: int,
                    *,
                    min_scale_factor: float = 0.5,
                    max_scale_factor: float = 2.0,
                    scale_factor_step_size: float = 0.25,
                    seed: Optional[int] = None,
                    is_training: bool = True,
                    input_context: Optional[tf.distribute.InputContext] = None,
                    shuffle_buffer_size: int = DEFAULT_SHUFFLE_BUFFER,
                    check_size: bool = True, start_step: int = 0) -> tf.data.Dataset:
    """Batches of pixel-labeled crops (keys in the module docstring).

    Training: random scale / pad / crop / flip, shuffled, repeated forever,
    incomplete batches dropped. ``is_training=False``: one pass in a fixed order,
    images padded to ``crop_size`` without augmentation (larger images raise an
    error), last batch kept.

    Args:
      info: dataset descriptor.
      dataset_dir: directory of the records (TFDS data_dir for tfds:NAME).
      split: split name (files ``{split}-*``).
      crop_size: int or (height, width).
      batch_size: GLOBAL batch size.
      min_scale_factor, max_scale_factor, scale_factor_step_size: random scale.
      seed: makes the pipeline deterministic.
      is_training: see above.
      input_context: from ``distribute_datasets_from_function``.
      shuffle_buffer_size: records in the shuffle buffer.
      check_size: count the split and warn when it differs from the known size.
      start_step: training with a seed: start at the batch the stream gives at
        this step, as an uninterrupted run would (a resumed run).
    """
    crop = _crop_hw(crop_size)
    _check_scales(min_scale_factor, max_scale_factor, scale_factor_step_size)
    local_batch = per_replica_batch_size(batch_size, input_context)
    start_index = _start_index(start_step, batch_size, input_context, seed, is_training)
    examples = decoded_examples(
        info, dataset_dir, split, training=is_training, seed=seed,
        input_context=input_context, shuffle_buffer_size=shuffle_buffer_size,
        check_size=check_size, start_index=start_index)
    examples = _with_example_seeds(examples, seed, input_context,
                                   _LABELED_BRANCH, start_index)

    def process(example, example_seed):
        image = tf.cast(example["image"], tf.float32)
        if is_training:
            out = augment.random_geometry(
                image, example["label"], crop, info.ignore_label, example_seed,
                min_scale_factor, max_scale_factor, scale_factor_step_size)
        else:
            image, label, valid = _pad_to_fixed(
                image, example["label"], example["filename"], crop,
                info.ignore_label, "crop_size")
            out = {"image": image, "label": label, "valid_mask": valid}
        out["class_presence"] = augment.class_presence(out["label"],
                                                       info.num_classes)
        return out

    return _finish(examples, process, local_batch,
                   drop_remainder=is_training, seed=seed)


def unlabeled_dataset(info: DatasetInfo,
                      dataset_dir: Optional[str],
                      split: str,
                      crop_size: CropSize,
                      batch_size: int,
                      *,
                      min_scale_factor: float = 0.5,
                      max_scale_factor: float = 2.0,
                      scale_factor_step_size: float = 0.25,
                      cutout_size: int = 100,
                      weakly: bool = False,
                      image_label_source: str = "crop",
                      brightness: float = 0.5,
                      contrast: float = 0.5,
                      saturation: float = 0.5,
                      hue: float = 0.25,
                      seed: Optional[int] = None,
                      input_context: Optional[tf.distribute.InputContext] = None,
                      shuffle_buffer_size: int = DEFAULT_SHUFFLE_BUFFER,
                      check_size: bool = True, start_step: int = 0) -> tf.data.Dataset:
    """Batches of pixel-aligned weak/strong views (keys in the module docstring).

    The weak view is ``random_geometry`` of the image; the strong view is the
    same crop with colour jitter (``brightness``, ``contrast``, ``saturation``
    factors in [1-s, 1+s], ``hue`` shift in [-hue, hue], random order; all 0
    disables it) and one ``cutout_size`` square of mean pixels (0 disables it).
    Records without masks work (``monitor_label`` is then all ignore label).

    With ``weakly=True`` the batch also carries ``image_labels``, by
    ``image_label_source``:

    * ``"crop"`` (the reference implementation): the foreground classes of the
      mask inside the augmented crop after CutOut (CutOut sets the mask to the
      ignore label), i.e. ``class_presence`` of the mask where
      ``strong_valid_mask`` is 1. Every record needs a mask; one without
      fails at iteration time naming its id.
    * ``"record"``: the record's whole-image ``image/class_labels`` (empty:
      no foreground class). The split's records must carry the feature
      (converters' ``--class_labels``); checked on its first record.

    Other args as in ``labeled_dataset``; always training mode (shuffled,
    repeated, incomplete batches dropped).
    """
    crop = _crop_hw(crop_size)
    _check_scales(min_scale_factor, max_scale_factor, scale_factor_step_size)
    if cutout_size < 0:
        raise ValueError(f"cutout_size must be >= 0, got {cutout_size}")
    augment.check_color_jitter(brightness, contrast, saturation, hue)
    if image_label_source not in IMAGE_LABEL_SOURCES:
        raise ValueError(f"image_label_source must be one of {IMAGE_LABEL_SOURCES}, "
                         f"got {image_label_source!r}")
    if weakly and image_label_source == "record":
        if info.is_tfds:
            raise ValueError(f"image_label_source='record' reads image/class_labels from "
                             f"TFRecords; {info.name} is a TFDS dataset (use 'crop')")
        records.check_records_have_class_labels(dataset_dir, split)
    local_batch = per_replica_batch_size(batch_size, input_context)
    start_index = _start_index(start_step, batch_size, input_context, seed, True)
    examples = decoded_examples(
        info, dataset_dir, split, training=True, seed=seed,
        input_context=input_context, shuffle_buffer_size=shuffle_buffer_size,
        check_size=check_size, start_index=start_index)
    examples = _with_example_seeds(examples, seed, input_context,
                                   _UNLABELED_BRANCH, start_index)

    def process(example, example_seed):
        weak_seed, strong_seed = augment.split_seed(example_seed, 2)
        weak = augment.random_geometry(
            tf.cast(example["image"], tf.float32), example["label"], crop,
            info.ignore_label, weak_seed, min_scale_factor, max_scale_factor,
            scale_factor_step_size)
        strong, strong_valid = augment.strong_view(
            weak["image"], weak["valid_mask"], strong_seed, cutout_size,
            brightness, contrast, saturation, hue)
        out = {
            "weak_image": weak["image"],
            "strong_image": strong,
            "valid_mask": weak["valid_mask"],
            "strong_valid_mask": strong_valid,
            "monitor_label": weak["label"],
        }
        if weakly and image_label_source == "record":
            out["image_labels"] = augment.labels_to_multi_hot(example["class_labels"],
                                                              info.num_classes)
        elif weakly:
            check = tf.debugging.Assert(example["has_label"], [
                "weakly mode with image_label_source='crop' derives image-level labels "
                "from masks, but this record has none (use image_label_source='record' "
                "for records with image/class_labels only); id:", example["filename"]])
            with tf.control_dependencies([check]):
                visible = tf.where(strong_valid > 0, weak["label"], info.ignore_label)
            out["image_labels"] = augment.class_presence(visible, info.num_classes)
        return out

    return _finish(examples, process, local_batch, drop_remainder=True,
                   seed=seed)


def eval_dataset(info: DatasetInfo,
                 dataset_dir: Optional[str],
                 split: str,
                 eval_crop_size: Optional[CropSize] = None,
                 batch_size: int = 1,
                 input_context: Optional[tf.distribute.InputContext] = None,
                 check_size: bool = True) -> tf.data.Dataset:
    """Evaluation batches: one pass in a fixed order, no augmentation.

    With ``eval_crop_size`` every image is padded bottom/right to it (mean
    pixel, labels with the ignore label); an image larger than the crop raises
    InvalidArgumentError naming its id and size. Without it whole images are
    returned, which needs ``batch_size=1``. ``height``/``width`` carry the
    original size for un-padding.
    """
    crop = None if eval_crop_size is None else _crop_hw(eval_crop_size,
                                                        "eval_crop_size")
    local_batch = per_replica_batch_size(batch_size, input_context)
    if crop is None and local_batch != 1:
        raise ValueError(
            f"whole-image evaluation (eval_crop_size=None) needs a per-replica "
            f"batch of 1, got {local_batch}; set eval_crop_size (e.g. "
            f"{info.eval_crop_size}) to batch padded images")
    examples = decoded_examples(info, dataset_dir, split, training=False,
                                input_context=input_context,
                                check_size=check_size)

    def process(example):
        image = tf.cast(example["image"], tf.float32)
        label = example["label"]
        shape = tf.shape(image)
        if crop is not None:
            image, label, _ = _pad_to_fixed(image, label, example["filename"], crop,
                                            info.ignore_label, "eval crop")
        return {"image": image, "label": label, "height": shape[0],
                "width": shape[1], "filename": example["filename"]}

    dataset = examples.map(process, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.batch(local_batch).prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = True
    return dataset.with_options(options)
