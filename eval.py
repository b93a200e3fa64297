"""Evaluates a trained model on a split: mIoU, per-class IoU, pixel accuracy.

    python eval.py --checkpoint_dir=runs/voc_8 --eval_split=val
    python eval.py --checkpoint_dir=runs/voc_8 --watch          # every new checkpoint
    python eval.py --saved_model=runs/voc_8/export --dataset_dir=... --dataset=pascal_voc_seg
    python eval.py --checkpoint_path=runs/voc_8/kept/ckpt-1000,runs/voc_8/kept/ckpt-2000 \
        --output_json='runs/voc_8/curve/eval_val_{step}.json'     # given checkpoints

The network is rebuilt from ``<checkpoint_dir>/run_config.json`` (written by
train.py; with ``--checkpoint_path`` alone, the folder of the checkpoint or
its parent, e.g. for train.py's ``kept/`` checkpoints); dataset and
dataset_dir default to the training run's. Prints a table and writes
``--output_json`` (``miou`` as a fraction, ``per_class_iou``,
``pixel_accuracy``, the checkpoint or model, its ``step`` and the eval
settings) and, with ``--per_image_confusion=PATH.npz``, every image's
confusion matrix with the image ids (``core.evaluation.read_per_image_confusion``).
With several checkpoints, both paths contain ``{step}``.
"""

from __future__ import annotations

import os
import sys
import time

from absl import app, flags

FLAGS = flags.FLAGS

flags.DEFINE_string("checkpoint_dir", None, "A train_logdir written by train.py.")
flags.DEFINE_list("checkpoint_path", None,
                  "Checkpoints to evaluate, comma-separated (default: the latest of "
                  "checkpoint_dir), e.g. train.py's <train_logdir>/kept/ckpt-<step>; with "
                  "several, --output_json and --per_image_confusion must contain {step}.")
flags.DEFINE_string("per_image_confusion", None,
                    "Also write every image's confusion matrix and id to this .npz (arrays "
                    "image_ids [N] and confusion [N, C, C], rows = label).")
flags.DEFINE_string("saved_model", None, "An exported SavedModel instead of a checkpoint.")
flags.DEFINE_boolean("watch", False, "Evaluate every new checkpoint in checkpoint_dir.")
flags.DEFINE_integer("watch_timeout_secs", 3600,
                     "With --watch: stop after this long without a new checkpoint.")
flags.DEFINE_integer("watch_until_step", 0,
                     "With --watch: stop after evaluating a checkpoint at this step or later.")
flags.DEFINE_string("dataset", None, "Dataset name (default: the training run's).")
flags.DEFINE_string("dataset_dir", None, "Records directory (default: the training run's).")
flags.DEFINE_string("eval_split", "val", "Split to evaluate.")
flags.DEFINE_list("eval_crop_size", None,
                  "Pad images to height,width (513,513 VOC; 641,641 COCO). Default: the "
                  "dataset's; 'none' evaluates whole images.")
flags.DEFINE_list("eval_scales", ["1.0"], "Input scales whose probabilities are averaged.")
flags.DEFINE_boolean("add_flipped_images", False, "Also average left-right flips.")
flags.DEFINE_integer("eval_batch_size", 1, "Global batch (needs a crop size when > 1).")
flags.DEFINE_string("output_json", None,
                    "Result file (default: <checkpoint_dir>/eval_<split>.json).")
flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multi_worker", "tpu"],
                  "tf.distribute strategy.")
flags.DEFINE_integer("num_cpu_replicas", 0, "Logical CPU devices for --strategy=mirrored.")
flags.DEFINE_string("tpu", None, "TPU address for --strategy=tpu.")


def _eval_crop(info):
    from core.evaluation import parse_crop

    try:
        return parse_crop(FLAGS.eval_crop_size, info.eval_crop_size)
    except ValueError as error:
        raise app.UsageError(f"--eval_crop_size: {error}") from error


def _dataset_info(run):
    from datasets.dataset_info import get_dataset_info

    name = FLAGS.dataset or (run or {}).get("dataset", {}).get("name")
    dataset_dir = FLAGS.dataset_dir or (run or {}).get("dataset", {}).get("dataset_dir")
    if not name or not dataset_dir:
        raise app.UsageError("--dataset and --dataset_dir are needed (no run_config.json)")
    return get_dataset_info(name, dataset_dir), dataset_dir


def checkpoint_step(path):
    """The step of a checkpoint ``.../ckpt-<step>``, or None."""
    number = os.path.basename(str(path)).rpartition("-")[2]
    return int(number) if number.isdigit() else None


def _output_path(template, step, flag):
    if template is None:
        return None
    if "{step}" not in template:
        return template
    if step is None:
        raise app.UsageError(f"--{flag}: {{step}} needs checkpoints named ckpt-<step>")
    return template.replace("{step}", str(step))


def _evaluate_once(predict_fn, info, dataset_dir, strategy, evaluated, step=None,
                   step_cache=None):
    from core import evaluation
    from datasets.input_pipeline import eval_dataset

    crop = _eval_crop(info)
    scales = [float(s) for s in FLAGS.eval_scales]
    dataset = strategy.distribute_datasets_from_function(
        lambda context: eval_dataset(info, dataset_dir, FLAGS.eval_split, crop,
                                     FLAGS.eval_batch_size, input_context=context))
    start = time.monotonic()
    result = evaluation.evaluate(predict_fn, dataset, info.num_classes, info.ignore_label,
                                 eval_scales=scales,
                                 add_flipped_images=FLAGS.add_flipped_images,
                                 strategy=strategy,
                                 per_image=bool(FLAGS.per_image_confusion),
                                 step_cache=step_cache)
    per_image = _output_path(FLAGS.per_image_confusion, step, "per_image_confusion")
    if per_image:
        evaluation.write_per_image_confusion(
            per_image, result.pop("image_ids"), result.pop("per_image_confusion"),
            evaluated=evaluated, split=FLAGS.eval_split)
        result["per_image_confusion"] = per_image
    result.update(evaluated=evaluated, step=step, split=FLAGS.eval_split, dataset=info.name,
                  eval_crop_size=list(crop) if crop else None,
                  seconds=round(time.monotonic() - start, 1))
    print(f"{evaluated} on {info.name}/{FLAGS.eval_split} "
          f"({result['num_batches']} batches, {result['seconds']} s):")
    print(evaluation.format_table(result, info.class_names), flush=True)
    output = _output_path(FLAGS.output_json, step, "output_json") or os.path.join(
        FLAGS.checkpoint_dir or FLAGS.saved_model, f"eval_{FLAGS.eval_split}.json")
    evaluation.write_result(result, output)
    print(f"wrote {output}")
    return result


def main(argv):
    del argv
    from core import distribute

    strategy = distribute.make_strategy(FLAGS.strategy, FLAGS.num_cpu_replicas, FLAGS.tpu)
    if FLAGS.checkpoint_path and not FLAGS.checkpoint_dir:
        FLAGS.checkpoint_dir = _run_dir_of(FLAGS.checkpoint_path[0])
    if bool(FLAGS.checkpoint_dir) == bool(FLAGS.saved_model):
        raise app.UsageError("pass exactly one of --checkpoint_dir (or --checkpoint_path) "
                             "and --saved_model")
    paths = FLAGS.checkpoint_path or []
    if len(paths) > 1:
        for flag in ("output_json", "per_image_confusion"):
            value = getattr(FLAGS, flag)
            if (value is not None or flag == "output_json") and "{step}" not in (value or ""):
                raise app.UsageError(f"--{flag}={value} must contain {{step}}: "
                                     f"--checkpoint_path names {len(paths)} checkpoints")
        if FLAGS.watch:
            raise app.UsageError("--watch evaluates new checkpoints, not --checkpoint_path")
    for path in paths:
        if not _checkpoint_exists(path):
            raise app.UsageError(f"--checkpoint_path: no checkpoint {path} "
                                 f"(expected {path}.index)")
    import tensorflow as tf

    from core import evaluation, run_config, training

    if FLAGS.saved_model:
        run = None
        info, dataset_dir = _dataset_info(run)
        with strategy.scope():
            loaded = tf.saved_model.load(FLAGS.saved_model)
        _evaluate_once(evaluation.saved_model_predict_fn(loaded), info, dataset_dir, strategy,
                       FLAGS.saved_model)
        return

    run = run_config.read_run_config(FLAGS.checkpoint_dir)
    info, dataset_dir = _dataset_info(run)
    with strategy.scope():
        network = run_config.build_network(run)
    checkpoint = training.network_checkpoint(network)
    predict_fn = evaluation.network_predict_fn(network)
    step_cache = {}  # one traced step for every checkpoint restored into the network

    def evaluate(path):
        checkpoint.restore(path).expect_partial().assert_existing_objects_matched()
        return _evaluate_once(predict_fn, info, dataset_dir, strategy, path,
                              checkpoint_step(path), step_cache)

    if not FLAGS.watch:
        paths = FLAGS.checkpoint_path or [training.latest_checkpoint(FLAGS.checkpoint_dir)]
        if paths[0] is None:
            print(f"ERROR: no checkpoint in {FLAGS.checkpoint_dir}", file=sys.stderr)
            sys.exit(1)
        for path in paths:
            evaluate(path)
        return
    for path in tf.train.checkpoints_iterator(FLAGS.checkpoint_dir, min_interval_secs=10,
                                              timeout=FLAGS.watch_timeout_secs):
        evaluate(path)
        step = int(path.rsplit("-", 1)[-1])
        if FLAGS.watch_until_step and step >= FLAGS.watch_until_step:
            break


def _checkpoint_exists(prefix):
    import tensorflow as tf

    return tf.io.gfile.exists(f"{prefix}.index")


def _run_dir_of(path):
    """The train_logdir of a checkpoint: its folder, or the folder above (kept/)."""
    folder = os.path.dirname(os.path.abspath(path))
    for candidate in (folder, os.path.dirname(folder)):
        if os.path.exists(os.path.join(candidate, "run_config.json")):
            return candidate
    raise app.UsageError(f"--checkpoint_path={path}: no run_config.json next to it or one "
                         f"folder up; pass --checkpoint_dir")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    app.run(main)
