"""Evaluates a trained model on a split: mIoU, per-class IoU, pixel accuracy.

    python eval.py --checkpoint_dir=runs/voc_8 --eval_split=val
    python eval.py --checkpoint_dir=runs/voc_8 --watch          # every new checkpoint
    python eval.py --saved_model=runs/voc_8/export --dataset_dir=... --dataset=pascal_voc_seg

The network is rebuilt from ``<checkpoint_dir>/run_config.json`` (written by
train.py); dataset and dataset_dir default to the training run's. Prints a
table and writes ``--output_json`` (``miou`` as a fraction, ``per_class_iou``,
``pixel_accuracy``, the checkpoint or model and the eval settings).
"""

from __future__ import annotations

import os
import sys
import time

from absl import app, flags

FLAGS = flags.FLAGS

flags.DEFINE_string("checkpoint_dir", None, "A train_logdir written by train.py.")
flags.DEFINE_string("checkpoint_path", None,
                    "A specific checkpoint in checkpoint_dir (default: the latest).")
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


def _evaluate_once(predict_fn, info, dataset_dir, strategy, evaluated):
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
                                 strategy=strategy)
    result.update(evaluated=evaluated, split=FLAGS.eval_split, dataset=info.name,
                  eval_crop_size=list(crop) if crop else None,
                  seconds=round(time.monotonic() - start, 1))
    print(f"{evaluated} on {info.name}/{FLAGS.eval_split} "
          f"({result['num_batches']} batches, {result['seconds']} s):")
    print(evaluation.format_table(result, info.class_names), flush=True)
    output = FLAGS.output_json or os.path.join(
        FLAGS.checkpoint_dir or FLAGS.saved_model, f"eval_{FLAGS.eval_split}.json")
    evaluation.write_result(result, output)
    print(f"wrote {output}")
    return result


def main(argv):
    del argv
    from core import distribute

    strategy = distribute.make_strategy(FLAGS.strategy, FLAGS.num_cpu_replicas, FLAGS.tpu)
    if bool(FLAGS.checkpoint_dir) == bool(FLAGS.saved_model):
        raise app.UsageError("pass exactly one of --checkpoint_dir and --saved_model")
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

    def evaluate(path):
        checkpoint.restore(path).expect_partial().assert_existing_objects_matched()
        return _evaluate_once(predict_fn, info, dataset_dir, strategy, path)

    if not FLAGS.watch:
        path = FLAGS.checkpoint_path or training.latest_checkpoint(FLAGS.checkpoint_dir)
        if path is None:
            print(f"ERROR: no checkpoint in {FLAGS.checkpoint_dir}", file=sys.stderr)
            sys.exit(1)
        evaluate(path)
        return
    for path in tf.train.checkpoints_iterator(FLAGS.checkpoint_dir, min_interval_secs=10,
                                              timeout=FLAGS.watch_timeout_secs):
        evaluate(path)
        step = int(path.rsplit("-", 1)[-1])
        if FLAGS.watch_until_step and step >= FLAGS.watch_until_step:
            break


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    app.run(main)
