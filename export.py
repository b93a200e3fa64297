"""Exports a trained checkpoint as a SavedModel (train.py also does this at the end).

    python export.py --checkpoint_dir=runs/voc_8 --export_dir=exports/voc_8

The serving signature takes a batch of uint8 RGB images of any size and
returns ``semantic`` (int32 class map at the input size) and
``probabilities`` (per class, at the input size); preprocessing is inside.
See ``core/export.py``.
"""

from __future__ import annotations

import os

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("checkpoint_dir", None, "A train_logdir written by train.py.")
flags.DEFINE_string("checkpoint_path", None, "A specific checkpoint (default: the latest).")
flags.DEFINE_string("export_dir", None, "Where the SavedModel goes (replaced if present).")
flags.mark_flags_as_required(["checkpoint_dir", "export_dir"])


def main(argv):
    del argv
    from core import run_config, training
    from core.export import export_saved_model
    from datasets.dataset_info import get_dataset_info

    run = run_config.read_run_config(FLAGS.checkpoint_dir)
    network = run_config.build_network(run)
    path = FLAGS.checkpoint_path or training.latest_checkpoint(FLAGS.checkpoint_dir)
    if path is None:
        raise app.UsageError(f"no checkpoint in {FLAGS.checkpoint_dir}")
    training.network_checkpoint(network).restore(path).expect_partial() \
        .assert_existing_objects_matched()
    try:
        info = get_dataset_info(run["dataset"]["name"], run["dataset"]["dataset_dir"])
    except (ValueError, OSError) as error:
        print(f"note: dataset descriptor unavailable ({error}); labels.json not written")
        info = None
    export_saved_model(network, FLAGS.export_dir, info)
    print(f"exported {path} to {FLAGS.export_dir}")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    app.run(main)
