"""Draws a labeled subset of a split (1/N or K images) and writes id lists.

    python datasets/make_splits.py --dataset=pascal_voc_seg \\
        --dataset_dir=data/voc_records --split=train --denominator=16 \\
        --seed=3 --labeled_list=splits/16_seed3.txt \\
        --unlabeled_list=splits/16_seed3_unlabeled.txt

    python datasets/make_splits.py --list_file=camvid/train.txt \\
        --label_dir=camvid/labels/train --ignore_label=11 --num_labeled=46 \\
        --labeled_list=camvid_46.txt --unlabeled_list=camvid_46_rest.txt

The pool is a converted split (``--dataset_dir`` + ``--split``; masks read
from the records) or an id list with a mask folder (``--list_file`` +
``--label_dir``). ``K = round(pool / denominator)`` (at least 1) or
``--num_labeled``.

Sampling (deterministic for ``--seed``): subsets of K ids are drawn uniformly
at random until one contains every class that occurs in the pool (at most
``--max_tries`` draws, like the reference's rejection-sampled ``16_clean_*``
lists); if none does, a greedy pick covers the rarest classes first and fills
the rest at random, and the classes still missing (K too small) are logged.
The labeled ids are written sorted; the unlabeled list is the rest of the pool
in pool order. Class values are all mask values except the ignore label.
"""

if __package__ in (None, ""):
    import os, sys  # pylint: disable=g-multiple-import
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from typing import Dict, List, Optional, Sequence, Set, Tuple

from absl import app
from absl import flags
from absl import logging
import numpy as np

from datasets import conversion
from datasets import image_io


def classes_from_records(dataset_dir: str, split: str, ignore_label: int
                         ) -> Dict[str, Set[int]]:
    """{id: set of mask values except the ignore label}, from a split's records."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from datasets import records  # pylint: disable=g-import-not-at-top
    files = records.split_files(dataset_dir, split)
    spec = {
        records.IMAGE_FILENAME: tf.io.FixedLenFeature((), tf.string),
        records.MASK_ENCODED: tf.io.FixedLenFeature((), tf.string,
                                                    default_value=""),
    }

    def parse(serialized):
        features = tf.io.parse_single_example(serialized, spec)
        encoded = features[records.MASK_ENCODED]
        values = tf.cond(
            tf.strings.length(encoded) > 0,
            lambda: tf.unique(tf.reshape(tf.io.decode_png(encoded, channels=1),
                                         [-1]))[0],
            lambda: tf.zeros([0], tf.uint8))
        return features[records.IMAGE_FILENAME], values

    result = {}
    dataset = tf.data.TFRecordDataset(files).map(
        parse, num_parallel_calls=tf.data.AUTOTUNE)
    for image_id, values in dataset.as_numpy_iterator():
        image_id = image_id.decode("utf-8")
        if image_id in result:
            raise ValueError(f"split {split!r} in {dataset_dir} holds id "
                             f"{image_id!r} twice")
        result[image_id] = {int(v) for v in values if v != ignore_label}
    if not result:
        raise ValueError(f"split {split!r} in {dataset_dir} is empty")
    if not any(result.values()):
        raise ValueError(f"split {split!r} in {dataset_dir} has no masks; class "
                         "coverage needs them")
    return result


def classes_from_masks(ids: Sequence[str], label_dir: str, ignore_label: int
                       ) -> Dict[str, Set[int]]:
    """{id: set of mask values except the ignore label}, from ``label_dir``."""
    result = {}
    for image_id in ids:
        path = image_io.find_file(label_dir, image_id, (".png",))
        mask = image_io.read_mask(path)
        result[image_id] = {int(v) for v in np.unique(mask) if v != ignore_label}
    return result


def _covered(subset: Sequence[str], classes: Dict[str, Set[int]]) -> Set[int]:
    covered = set()
    for image_id in subset:
        covered |= classes[image_id]
    return covered


def sample_labeled(classes: Dict[str, Set[int]], num_labeled: int, seed: int,
                   max_tries: int = 1000) -> Tuple[List[str], Set[int]]:
    """Draws ``num_labeled`` ids covering every class of the pool if possible.

    Args:
      classes: {id: classes in its mask}, in pool order.
      num_labeled: K, 1 <= K <= pool size.
      seed: random seed (same seed, same pool -> same subset).
      max_tries: rejection-sampling draws before the greedy fallback.

    Returns:
      (labeled ids in draw order, classes of the pool the subset misses).
    """
    ids = list(classes)
    if not 1 <= num_labeled <= len(ids):
        raise ValueError(f"cannot draw {num_labeled} labeled ids from a pool of "
                         f"{len(ids)}")
    all_classes = _covered(ids, classes)
    rng = np.random.default_rng(seed)
    for attempt in range(1, max_tries + 1):
        order = rng.permutation(len(ids))[:num_labeled]
        subset = [ids[i] for i in order]
        if _covered(subset, classes) == all_classes:
            logging.info("draw %d covers all %d classes", attempt, len(all_classes))
            return subset, set()
    logging.warning("no random subset of %d ids covered all %d classes in %d "
                    "draws; picking the rarest classes first", num_labeled,
                    len(all_classes), max_tries)
    frequency = {c: sum(c in s for s in classes.values()) for c in all_classes}
    shuffled = [ids[i] for i in rng.permutation(len(ids))]
    subset: List[str] = []
    for cls in sorted(all_classes, key=lambda c: (frequency[c], c)):
        if len(subset) == num_labeled:
            break
        if cls in _covered(subset, classes):
            continue
        subset.append(next(i for i in shuffled
                           if cls in classes[i] and i not in subset))
    chosen = set(subset)
    subset += [i for i in shuffled if i not in chosen][:num_labeled - len(subset)]
    missing = all_classes - _covered(subset, classes)
    if missing:
        logging.warning("the %d labeled ids miss classes %s", num_labeled,
                        sorted(missing))
    return subset, missing


def make_splits(classes: Dict[str, Set[int]],
                labeled_list: str,
                unlabeled_list: Optional[str],
                seed: int,
                denominator: Optional[int] = None,
                num_labeled: Optional[int] = None,
                max_tries: int = 1000) -> Tuple[List[str], List[str]]:
    """Draws the labeled subset and writes the two lists.

    Returns:
      (labeled ids sorted, unlabeled ids in pool order).
    """
    if (denominator is None) == (num_labeled is None):
        raise ValueError("give exactly one of --denominator and --num_labeled")
    if denominator is not None:
        if denominator < 1:
            raise ValueError(f"--denominator must be >= 1, got {denominator}")
        num_labeled = max(1, int(round(len(classes) / denominator)))
    subset, _ = sample_labeled(classes, num_labeled, seed, max_tries)
    labeled = sorted(subset)
    chosen = set(subset)
    unlabeled = [i for i in classes if i not in chosen]
    conversion.write_id_list(labeled_list, labeled)
    if unlabeled_list:
        conversion.write_id_list(unlabeled_list, unlabeled)
    logging.info("wrote %d labeled ids to %s and %d unlabeled ids to %s",
                 len(labeled), labeled_list, len(unlabeled), unlabeled_list)
    return labeled, unlabeled


FLAGS = flags.FLAGS


def _define_flags() -> None:
    flags.DEFINE_string("dataset", None,
                        "Dataset name for the ignore label (get_dataset_info), "
                        "e.g. pascal_voc_seg; or give --ignore_label.")
    flags.DEFINE_string("dataset_dir", None, "Directory of converted records.")
    flags.DEFINE_string("split", None, "Split of --dataset_dir to draw from.")
    flags.DEFINE_string("list_file", None,
                        "Pool as an id list (with --label_dir) instead of "
                        "records.")
    flags.DEFINE_string("label_dir", None,
                        "Directory of <id>.png masks for --list_file.")
    flags.DEFINE_integer("ignore_label", None,
                         "Mask value that is not a class (default: from "
                         "--dataset).")
    flags.DEFINE_integer("denominator", None,
                         "Draw round(pool / N) labeled ids (e.g. 16 for 1/16).")
    flags.DEFINE_integer("num_labeled", None, "Draw exactly K labeled ids.")
    flags.DEFINE_integer("seed", 0, "Random seed.")
    flags.DEFINE_integer("max_tries", 1000,
                         "Random draws tried before the greedy fallback.")
    flags.DEFINE_string("labeled_list", None, "Output: labeled ids.")
    flags.DEFINE_string("unlabeled_list", None,
                        "Output: the rest of the pool (optional).")
    flags.mark_flag_as_required("labeled_list")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")

    def run():
        ignore_label = FLAGS.ignore_label
        if ignore_label is None:
            if FLAGS.dataset is None:
                raise ValueError("give --ignore_label or --dataset")
            from datasets import dataset_info  # pylint: disable=g-import-not-at-top
            ignore_label = dataset_info.get_dataset_info(
                FLAGS.dataset, FLAGS.dataset_dir).ignore_label
        if FLAGS.dataset_dir and FLAGS.split:
            if FLAGS.list_file or FLAGS.label_dir:
                raise ValueError("give either --dataset_dir/--split or "
                                 "--list_file/--label_dir, not both")
            classes = classes_from_records(FLAGS.dataset_dir, FLAGS.split,
                                           ignore_label)
        elif FLAGS.list_file and FLAGS.label_dir:
            classes = classes_from_masks(conversion.read_id_list(FLAGS.list_file),
                                         FLAGS.label_dir, ignore_label)
        else:
            raise ValueError("give --dataset_dir and --split, or --list_file and "
                             "--label_dir")
        labeled, unlabeled = make_splits(
            classes, FLAGS.labeled_list, FLAGS.unlabeled_list, FLAGS.seed,
            FLAGS.denominator, FLAGS.num_labeled, FLAGS.max_tries)
        print(f"labeled: {len(labeled)} ids -> {FLAGS.labeled_list}; unlabeled: "
              f"{len(unlabeled)} ids -> {FLAGS.unlabeled_list}")

    conversion.run_converter(run)


if __name__ == "__main__":
    _define_flags()
    app.run(main)
