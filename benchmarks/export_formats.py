"""Agreement, accuracy, size and CPU latency of each export format of one
trained checkpoint: SavedModel, TFLite float32, TFLite float16, TFLite
dynamic-range.

    python benchmarks/export_formats.py --checkpoint_dir=/tmp/msrc_run \\
        --dataset_dir=/tmp/msrc_records --work_dir=/tmp/export_formats \\
        --json=/tmp/export_formats/export_formats.json

Exports the checkpoint (a train_logdir written by train.py) with
``export.py`` once per format into ``--work_dir`` (``--noexport`` reuses
exports already there), then, for each format, segments every image of
``--split`` whole (uint8 in, the ``serving_default`` signature; TFLite through
``ai-edge-litert``) and reports:

* ``agreement``: the share of pixels (all pixels of all images) whose argmax
  equals the SavedModel's;
* ``miou``: mean IoU against the labels, by the project's own metrics
  (``core.metrics.confusion_counts`` / ``iou_from_confusion``, the ignore
  label excluded). The SavedModel's figure is checked against
  ``core.evaluation.evaluate`` on the same split (eval.py's code path);
* ``bytes``: the model's size on disk (``model.tflite``; the SavedModel
  directory without ``labels.json``);
* ``latency_ms``: the median wall time of one call on one image of
  ``--latency_size`` (height,width; default 213,320, MSRC's landscape
  images), the first ``--latency_images`` such images of the split. After
  ``--warmup`` untimed calls per format, each of ``--repetitions``
  repetitions runs every format on every image, the order of formats rotated
  each repetition, so that load from other processes hits all formats alike.
  TensorFlow and LiteRT both use ``--num_threads`` threads.

Prints a table and writes ``--json``; ``--nolatency`` skips the timing.
"""

if __package__ in (None, ""):
    import os, sys  # pylint: disable=g-multiple-import
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time

from absl import app, flags

FLAGS = flags.FLAGS
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

flags.DEFINE_string("checkpoint_dir", None, "A train_logdir written by train.py.")
flags.DEFINE_string("dataset", None, "Dataset name (default: the training run's).")
flags.DEFINE_string("dataset_dir", None, "Records directory (default: the training run's).")
flags.DEFINE_string("split", "val", "Split to evaluate and time on.")
flags.DEFINE_string("work_dir", None, "Where the exports go.")
flags.DEFINE_boolean("export", True, "Export each format (false: reuse work_dir's exports).")
flags.DEFINE_boolean("latency", True, "Time the formats.")
flags.DEFINE_list("latency_size", ["213", "320"], "height,width of the timed images.")
flags.DEFINE_integer("latency_images", 5, "Images of --latency_size timed per repetition.")
flags.DEFINE_integer("warmup", 3, "Untimed calls per format before timing.")
flags.DEFINE_integer("repetitions", 10, "Timed repetitions (median reported).")
flags.DEFINE_integer("num_threads", os.cpu_count(), "Threads of TensorFlow and LiteRT.")
flags.DEFINE_string("json", None, "Write the results to this JSON file.")
flags.mark_flags_as_required(["checkpoint_dir", "work_dir"])

# name: export.py flags
FORMATS = {
    "saved_model": ["--format=saved_model"],
    "tflite_float32": ["--format=tflite", "--quantize=none"],
    "tflite_float16": ["--format=tflite", "--quantize=float16"],
    "tflite_dynamic_range": ["--format=tflite", "--quantize=dynamic_range"],
}


def export_all(work_dir):
    """Runs export.py once per format; returns {format: export_dir}."""
    dirs = {name: os.path.join(work_dir, name) for name in FORMATS}
    for name, extra in FORMATS.items():
        if not FLAGS.export:
            continue
        start = time.monotonic()
        subprocess.run([sys.executable, os.path.join(REPO, "export.py"),
                        f"--checkpoint_dir={FLAGS.checkpoint_dir}",
                        f"--export_dir={dirs[name]}", *extra],
                       check=True, stdout=subprocess.DEVNULL,
                       env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        print(f"exported {name} ({time.monotonic() - start:.0f} s)", flush=True)
    return dirs


def model_bytes(export_dir):
    total = 0
    for root, _, files in os.walk(export_dir):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files
                     if f != "labels.json")
    return total


def load_segmenters(dirs):
    """{format: segment(uint8 [1, H, W, 3]) -> int32 [1, H, W] and float32 probabilities}."""
    import tensorflow as tf

    from core.tflite_runtime import TFLiteSegmenter, tflite_model_path

    segmenters = {}
    for name, export_dir in dirs.items():
        path = tflite_model_path(export_dir)
        if path is not None:
            segmenters[name] = TFLiteSegmenter(path, num_threads=FLAGS.num_threads)
            continue
        serve = tf.saved_model.load(export_dir).signatures["serving_default"]
        segmenters[name] = (lambda serve: lambda images: {
            k: v.numpy() for k, v in serve(images=tf.constant(images)).items()})(serve)
    return segmenters


def val_examples(info, dataset_dir):
    """[(uint8 image [1, H, W, 3], label [1, H, W, 1])] of the split, whole images."""
    import numpy as np

    from datasets.input_pipeline import eval_dataset

    return [(batch["image"].numpy().astype(np.uint8), batch["label"].numpy())
            for batch in eval_dataset(info, dataset_dir, FLAGS.split, None, 1)]


def accuracy(segmenters, examples, info):
    """Per format: agreement with the SavedModel, mIoU, per-class IoU, and
    the probability differences behind any disagreement."""
    import numpy as np

    from core import metrics

    confusion = {name: np.zeros((info.num_classes, info.num_classes)) for name in segmenters}
    agree = dict.fromkeys(segmenters, 0)
    max_error = dict.fromkeys(segmenters, 0.0)
    margins = {name: [] for name in segmenters}
    pixels = 0
    for image, label in examples:
        outputs = {name: segment(image) for name, segment in segmenters.items()}
        reference = outputs["saved_model"]
        top2 = np.sort(reference["probabilities"], axis=-1)[..., -2:]
        margin = top2[..., 1] - top2[..., 0]
        pixels += reference["semantic"].size
        for name, out in outputs.items():
            confusion[name] += metrics.confusion_counts(
                label, out["semantic"][..., None], info.num_classes, info.ignore_label).numpy()
            same = out["semantic"] == reference["semantic"]
            agree[name] += int(same.sum())
            margins[name].extend(margin[~same].tolist())
            max_error[name] = max(max_error[name], float(
                np.abs(out["probabilities"] - reference["probabilities"]).max()))
    results = {}
    for name in segmenters:
        miou, iou = metrics.iou_from_confusion(confusion[name])
        results[name] = dict(
            agreement=agree[name] / pixels, pixels=pixels, disagreeing_pixels=pixels - agree[name],
            miou=miou, per_class_iou=[None if np.isnan(x) else float(x) for x in iou],
            max_probability_error=max_error[name],
            # How close to a tie the SavedModel was where the two disagree.
            median_saved_model_margin_at_disagreements=(
                float(np.median(margins[name])) if margins[name] else None))
    return results


def eval_py_miou(dirs, info, dataset_dir):
    """The SavedModel's mIoU by core.evaluation.evaluate (eval.py --saved_model)."""
    import tensorflow as tf

    from core import evaluation
    from datasets.input_pipeline import eval_dataset

    loaded = tf.saved_model.load(dirs["saved_model"])
    result = evaluation.evaluate(evaluation.saved_model_predict_fn(loaded),
                                 eval_dataset(info, dataset_dir, FLAGS.split, None, 1),
                                 info.num_classes, info.ignore_label, log_every=0)
    return result["miou"]


def latency(segmenters, examples):
    """Median ms per image per format, formats interleaved across repetitions."""
    size = tuple(int(v) for v in FLAGS.latency_size)
    images = [image for image, _ in examples if image.shape[1:3] == size]
    images = images[:FLAGS.latency_images]
    if not images:
        raise app.UsageError(f"no {FLAGS.split} image of size {size}")
    names = list(segmenters)
    for name in names:
        for _ in range(FLAGS.warmup):
            segmenters[name](images[0])
    times = {name: [] for name in names}
    for repetition in range(FLAGS.repetitions):
        shift = repetition % len(names)
        for name in names[shift:] + names[:shift]:
            for image in images:
                start = time.perf_counter()
                segmenters[name](image)
                times[name].append(time.perf_counter() - start)
    return {name: dict(median_ms=1000 * statistics.median(t),
                       p25_ms=1000 * statistics.quantiles(t, n=4)[0],
                       p75_ms=1000 * statistics.quantiles(t, n=4)[2],
                       calls=len(t), image_size=list(size), images=len(images))
            for name, t in times.items()}


def format_table(results):
    reference = results["saved_model"]["miou"]
    lines = ["| format | pixels agreeing with SavedModel | mIoU | vs SavedModel | size (MB) "
             "| median latency (ms/image) |",
             "|---|---|---|---|---|---|"]
    for name, r in results.items():
        latency_ms = f"{r['latency']['median_ms']:.1f}" if "latency" in r else "-"
        lines.append(f"| {name} | {100 * r['agreement']:.3f}% | {100 * r['miou']:.2f} "
                     f"| {100 * (r['miou'] - reference):+.2f} | {r['bytes'] / 1e6:.2f} "
                     f"| {latency_ms} |")
    return "\n".join(lines)


def main(argv):
    del argv
    import tensorflow as tf

    from core import run_config
    from datasets.dataset_info import get_dataset_info

    tf.config.threading.set_intra_op_parallelism_threads(FLAGS.num_threads)
    tf.config.threading.set_inter_op_parallelism_threads(FLAGS.num_threads)
    run = run_config.read_run_config(FLAGS.checkpoint_dir)
    dataset_dir = FLAGS.dataset_dir or run["dataset"]["dataset_dir"]
    info = get_dataset_info(FLAGS.dataset or run["dataset"]["name"], dataset_dir)
    started = datetime.datetime.now(datetime.timezone.utc)
    load_before = os.getloadavg()
    dirs = export_all(FLAGS.work_dir)
    segmenters = load_segmenters(dirs)
    examples = val_examples(info, dataset_dir)
    results = accuracy(segmenters, examples, info)
    for name, export_dir in dirs.items():
        results[name]["bytes"] = model_bytes(export_dir)
    evaluated = eval_py_miou(dirs, info, dataset_dir)
    print(f"SavedModel mIoU {100 * results['saved_model']['miou']:.2f} here, "
          f"{100 * evaluated:.2f} by core.evaluation.evaluate", flush=True)
    load_mid = os.getloadavg()
    if FLAGS.latency:
        for name, timing in latency(segmenters, examples).items():
            results[name]["latency"] = timing
    import ai_edge_litert

    report = dict(
        command=" ".join(sys.argv), started=started.isoformat(timespec="seconds"),
        checkpoint=tf.train.latest_checkpoint(FLAGS.checkpoint_dir), split=FLAGS.split,
        images=len(examples), dataset=info.name, eval_py_saved_model_miou=evaluated,
        machine=dict(cpus=os.cpu_count(), platform=platform.platform(),
                     python=platform.python_version(), tensorflow=tf.__version__,
                     ai_edge_litert=getattr(ai_edge_litert, "__version__", None),
                     num_threads=FLAGS.num_threads,
                     load_average_before=[round(x, 2) for x in load_before],
                     load_average_before_timing=[round(x, 2) for x in load_mid],
                     load_average_after=[round(x, 2) for x in os.getloadavg()]),
        formats=results)
    print(format_table(results))
    if FLAGS.json:
        os.makedirs(os.path.dirname(os.path.abspath(FLAGS.json)), exist_ok=True)
        with open(FLAGS.json, "w") as f:
            json.dump(report, f, indent=1)
        print(f"wrote {FLAGS.json}")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    app.run(main)
