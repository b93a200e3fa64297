"""How much of a run's val mIoU depends on its batch-norm moving statistics.

A diagnostic, not a training option. For each run it evaluates the final
checkpoint twice on whole images:

* as trained (the moving statistics the run accumulated), and
* after re-estimating every batch-norm layer's moving statistics as the
  plain average over ``--batches`` training-mode passes of the labeled
  training pipeline (random scale, crop, flip; the batches a supervised run
  sees), the weights unchanged::

      m = (1/K) sum_k mu_k,   v = (1/K) sum_k s_k^2

  (``DeepLabBatchNorm``'s update ``m <- d m + (1 - d) mu_k`` with
  ``d = k / (k + 1)`` for the k-th batch, k = 0..K-1).

PseudoSeg's step also updates the moving statistics with its weak and
strong unlabeled views (the reference's batch-norm modes), so if its val
mIoU rises after re-estimation while a supervised run's does not, the
difference lies in those statistics rather than in the learned weights.

    python benchmarks/bn_recalibration.py --run_dirs=runs/msrc_study/runs/P_seed1,... \
        --splits=labeled_1_4_seed1 --output_json=bn_recalibration.json

Prints one line per run and writes the figures as JSON.
"""

from __future__ import annotations

import os
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FLAGS = flags.FLAGS


def define_flags():
    """Defined only when run as a script, so that importing the module (tests)
    leaves absl's global flags alone."""
    flags.DEFINE_list("run_dirs", None, "Training logdirs (run_config.json and checkpoints).")
    flags.DEFINE_list("splits", None, "Labeled split per run dir (one for all, or one each).")
    flags.DEFINE_integer("batches", 50, "Training-mode batches for the re-estimation.")
    flags.DEFINE_integer("batch_size", 8, "Batch of the re-estimation passes.")
    flags.DEFINE_integer("seed", 0, "Seed of the re-estimation pipeline.")
    flags.DEFINE_string("eval_split", "val", "Split evaluated on whole images.")
    flags.DEFINE_string("output_json", None, "Where to write the figures.")
    flags.mark_flags_as_required(["run_dirs", "splits"])


def reestimate_moving_statistics(network, dataset, batches):
    """Sets every batch-norm layer's moving statistics to the average of the
    batch statistics over ``batches`` training-mode forward passes; returns
    how many layers. A plain Keras batch norm raises TypeError."""
    from core.layers import deeplab_batch_norms

    layers = deeplab_batch_norms(network, "reestimate_moving_statistics")
    saved = [layer.momentum for layer in layers]
    try:
        for k, batch in enumerate(dataset.take(batches)):
            for layer in layers:
                layer.momentum = k / (k + 1.0)
            network(batch["image"], training=True)
    finally:
        for layer, momentum in zip(layers, saved):
            layer.momentum = momentum
    return len(layers)


def main(argv):
    del argv
    from core import evaluation, run_config, training
    from datasets.dataset_info import get_dataset_info
    from datasets.input_pipeline import labeled_dataset

    splits = FLAGS.splits * len(FLAGS.run_dirs) if len(FLAGS.splits) == 1 else FLAGS.splits
    if len(splits) != len(FLAGS.run_dirs):
        raise app.UsageError(f"--splits has {len(FLAGS.splits)} values for "
                             f"{len(FLAGS.run_dirs)} --run_dirs")
    results = []
    for run_dir, split in zip(FLAGS.run_dirs, splits):
        start = time.time()
        config = run_config.read_run_config(run_dir)
        dataset_dir = config["dataset"]["dataset_dir"]
        info = get_dataset_info(config["dataset"]["name"], dataset_dir)
        network = run_config.build_network(config)
        path = training.latest_checkpoint(run_dir)
        if path is None:
            raise app.UsageError(f"--run_dirs: no checkpoint in {run_dir}")
        training.network_checkpoint(network).restore(path).expect_partial() \
            .assert_existing_objects_matched()
        as_trained = evaluation.evaluate_network(network, info, dataset_dir, FLAGS.eval_split)
        dataset = labeled_dataset(info, dataset_dir, split, config["train_crop_size"],
                                  FLAGS.batch_size, seed=FLAGS.seed)
        layers = reestimate_moving_statistics(network, dataset, FLAGS.batches)
        recalibrated = evaluation.evaluate_network(network, info, dataset_dir, FLAGS.eval_split)
        row = dict(run_dir=run_dir, checkpoint=path, split=split, batch_norm_layers=layers,
                   as_trained=100 * as_trained["miou"], recalibrated=100 * recalibrated["miou"],
                   as_trained_per_class=as_trained["per_class_iou"],
                   recalibrated_per_class=recalibrated["per_class_iou"],
                   seconds=round(time.time() - start, 1))
        results.append(row)
        print(f"{os.path.basename(run_dir.rstrip('/'))}: {FLAGS.eval_split} mIoU as trained "
              f"{row['as_trained']:.2f}, moving statistics re-estimated on {split} "
              f"{row['recalibrated']:.2f} ({row['recalibrated'] - row['as_trained']:+.2f}); "
              f"{layers} layers, {row['seconds']} s", flush=True)
    if FLAGS.output_json:
        evaluation.write_result(dict(batches=FLAGS.batches, batch_size=FLAGS.batch_size,
                                     seed=FLAGS.seed, eval_split=FLAGS.eval_split,
                                     runs=results), FLAGS.output_json)


if __name__ == "__main__":
    define_flags()
    app.run(main)
