"""Exports a trained checkpoint as a SavedModel or a TFLite model (train.py
also writes the SavedModel at the end).

    python export.py --checkpoint_dir=runs/voc_8 --export_dir=exports/voc_8
    python export.py --checkpoint_dir=runs/voc_8 --export_dir=exports/voc_8_tflite \\
        --format=tflite [--quantize=none|float16|dynamic_range] [--input_size=513,513]

Both take a batch of uint8 RGB images (any size, unless ``--input_size``
fixes it for TFLite) and return ``semantic`` (int32 class map at the input
size) and ``probabilities`` (per class, at the input size); preprocessing is
inside. ``--format=saved_model`` writes a SavedModel (``serving_default`` and
``predict_float``; runs in ``saved_model_cli`` and TensorFlow Serving, see
``core/export.py``); ``--format=tflite`` writes ``model.tflite`` for
``ai-edge-litert`` (see ``core/tflite.py``). Either directory also holds
``labels.json`` (class names and colours) when the dataset descriptor is
available.

The export is written beside ``--export_dir`` and renamed over it at the
end: a failed export leaves an earlier one at that path intact.
"""

from __future__ import annotations

import contextlib
import os
import sys

from absl import app, flags

FLAGS = flags.FLAGS
FORMATS = ("saved_model", "tflite")

flags.DEFINE_string("checkpoint_dir", None, "A train_logdir written by train.py.")
flags.DEFINE_string("checkpoint_path", None, "A specific checkpoint (default: the latest).")
flags.DEFINE_string("export_dir", None, "Where the export goes (replaced if present).")
flags.DEFINE_string("format", "saved_model", f"One of {', '.join(FORMATS)}.")
flags.DEFINE_string("quantize", "none",
                    "TFLite only: none (float32), float16 (float16 weights) or "
                    "dynamic_range (int8 weights, activations quantised on the fly).")
flags.DEFINE_list("input_size", None,
                  "TFLite only: height,width for a fixed [1, H, W, 3] input "
                  "(default: any batch and size).")
flags.mark_flags_as_required(["checkpoint_dir", "export_dir"])


def fail(message: str):
    """Prints ``ERROR: message`` on one line and exits with status 1."""
    print(f"ERROR: {message}", file=sys.stderr)
    sys.exit(1)


def parse_input_size(values):
    """``["513", "385"]`` -> (513, 385); None -> None; fails otherwise."""
    if values is None:
        return None
    try:
        size = tuple(int(v) for v in values)
    except ValueError:
        size = ()
    if len(size) != 2 or min(size) < 1:
        fail(f"--input_size={','.join(values)} must be height,width (positive integers)")
    return size


def check_flags():
    """The format settings, or a one-line error before anything is loaded."""
    if FLAGS.format not in FORMATS:
        fail(f"--format={FLAGS.format!r} is unknown; expected one of {', '.join(FORMATS)}")
    from core.tflite import QUANTIZATIONS

    if FLAGS.quantize not in QUANTIZATIONS:
        fail(f"--quantize={FLAGS.quantize!r} is unknown; expected one of "
             f"{', '.join(QUANTIZATIONS)}")
    input_size = parse_input_size(FLAGS.input_size)
    if FLAGS.format != "tflite" and (FLAGS.quantize != "none" or input_size):
        fail("--quantize and --input_size are for --format=tflite")
    return input_size


def find_checkpoint():
    """(run config, checkpoint path), or a one-line error."""
    import tensorflow as tf

    from core import run_config, training

    try:
        run = run_config.read_run_config(FLAGS.checkpoint_dir)
    except FileNotFoundError as error:
        fail(str(error))
    path = FLAGS.checkpoint_path or training.latest_checkpoint(FLAGS.checkpoint_dir)
    if path is None:
        fail(f"no checkpoint in {FLAGS.checkpoint_dir}")
    if not tf.io.gfile.exists(path + ".index"):
        fail(f"checkpoint {path} not found")
    return run, path


def dataset_info(run):
    from datasets.dataset_info import get_dataset_info

    try:
        return get_dataset_info(run["dataset"]["name"], run["dataset"]["dataset_dir"])
    except (ValueError, OSError) as error:
        print(f"note: dataset descriptor unavailable ({error}); labels.json not written")
        return None


def main(argv):
    del argv
    from core.export_files import staged_directory

    input_size = check_flags()
    with contextlib.ExitStack() as stack:
        try:
            staging = stack.enter_context(staged_directory(FLAGS.export_dir))
        except OSError as error:
            fail(f"cannot write the export to {FLAGS.export_dir}: {error}")
        run, path = find_checkpoint()
        from core import run_config, training

        network = run_config.build_network(run)
        training.network_checkpoint(network).restore(path).expect_partial() \
            .assert_existing_objects_matched()
        info = dataset_info(run)
        if FLAGS.format == "tflite":
            from core.tflite import write_tflite

            write_tflite(network, staging, info, FLAGS.quantize, input_size)
        else:
            from core.export import write_saved_model

            write_saved_model(network, staging, info)
    print(f"exported {path} to {FLAGS.export_dir} ({FLAGS.format}"
          + (f", quantize={FLAGS.quantize}" if FLAGS.format == "tflite" else "") + ")")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    app.run(main)
