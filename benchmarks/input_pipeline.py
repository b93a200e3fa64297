"""Throughput of the input pipelines: images/s of the labeled and the weak+strong
(unlabeled) branches at several crop sizes.

    python benchmarks/input_pipeline.py --json=/tmp/input_pipeline.json

By default converts CamVid's train split (``data/sources/camvid``, written by
``python -m datasets.download camvid --root=data``; 367 images of 480x360) with ``datasets/build_folder.py`` into a temporary
directory; ``--synthetic`` instead generates ``--synthetic_images`` JPEGs of
500x375 (the size of DeepLab's VOC images). Each measurement builds the
pipeline (unseeded, so tf.data may reorder for speed), runs
``--warmup_batches`` batches, then times ``--num_batches`` batches.
"""

if __package__ in (None, ""):
    import os, sys  # pylint: disable=g-multiple-import
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import datetime
import json
import os
import platform
import shutil
import tempfile
import time

from absl import app
from absl import flags

FLAGS = flags.FLAGS
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

flags.DEFINE_string("camvid_dir", os.path.join(REPO, "data", "sources", "camvid"),
                    "CamVid root (images/<split>, labels/<split>, <split>.txt).")
flags.DEFINE_string("split", "train", "CamVid split to convert and read.")
flags.DEFINE_bool("synthetic", False,
                  "Generate realistic-size JPEGs instead of reading CamVid.")
flags.DEFINE_integer("synthetic_images", 128, "Images generated with "
                     "--synthetic.")
flags.DEFINE_list("crops", ["321", "513"], "Square crop sizes to measure.")
flags.DEFINE_integer("batch_size", 8, "Global batch size.")
flags.DEFINE_integer("warmup_batches", 10, "Batches before timing.")
flags.DEFINE_integer("num_batches", 40, "Timed batches per measurement.")
flags.DEFINE_string("work_dir", None,
                    "Where the records go (default: a temporary directory, "
                    "deleted afterwards).")
flags.DEFINE_string("json", None, "Write the results to this JSON file.")

CAMVID_CLASSES = ["Sky", "Building", "Pole", "Road", "Pavement", "Tree",
                  "SignSymbol", "Fence", "Car", "Pedestrian", "Bicyclist"]


def prepare_records(work_dir: str) -> dict:
    """Converts CamVid (or generated JPEGs) to records; returns a description."""
    from datasets import build_folder  # pylint: disable=g-import-not-at-top
    records_dir = os.path.join(work_dir, "records")
    if FLAGS.synthetic:
        from datasets import fake_sources  # pylint: disable=g-import-not-at-top
        tree = fake_sources.write_folder_tree(
            os.path.join(work_dir, "source"), num_images=FLAGS.synthetic_images,
            num_classes=11, ignore_label=11, size=(375, 500), png_every=0,
            jpeg_quality=90)
        image_dir, label_dir, list_file = (tree.image_dir, tree.label_dir,
                                           tree.list_file)
        source = f"generated: {FLAGS.synthetic_images} JPEGs of 500x375"
    else:
        root = os.path.abspath(FLAGS.camvid_dir)
        image_dir = os.path.join(root, "images", FLAGS.split)
        label_dir = os.path.join(root, "labels", FLAGS.split)
        list_file = os.path.join(root, f"{FLAGS.split}.txt")
        source = f"CamVid {FLAGS.split} ({root}), 480x360 JPEGs"
    start = time.perf_counter()
    results = build_folder.convert_folder(
        image_dir=image_dir, label_dir=label_dir, list_file=list_file,
        output_dir=records_dir, split_name="bench", num_classes=11,
        ignore_label=11, dataset_name="camvid", class_names=CAMVID_CLASSES,
        num_shards=8, progress_every=10**9)
    seconds = time.perf_counter() - start
    count = results["bench"].num_written
    return {"records_dir": records_dir, "source": source, "num_images": count,
            "conversion_images_per_s": round(count / seconds, 1)}


def measure(make_dataset) -> float:
    """Images/s of a dataset of dict batches after warm-up."""
    iterator = iter(make_dataset())
    for _ in range(FLAGS.warmup_batches):
        next(iterator)
    start = time.perf_counter()
    images = 0
    for _ in range(FLAGS.num_batches):
        batch = next(iterator)
        images += int(next(iter(batch.values())).shape[0])
    return images / (time.perf_counter() - start)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from datasets import dataset_info  # pylint: disable=g-import-not-at-top
    from datasets import input_pipeline  # pylint: disable=g-import-not-at-top

    load_before = os.getloadavg()
    work_dir = FLAGS.work_dir or tempfile.mkdtemp(prefix="bench_input_")
    try:
        data = prepare_records(work_dir)
        info = dataset_info.get_dataset_info("camvid", data["records_dir"])
        results = []
        for crop in (int(c) for c in FLAGS.crops):
            for branch, fn in (("labeled", input_pipeline.labeled_dataset),
                               ("weak+strong", input_pipeline.unlabeled_dataset)):
                rate = measure(lambda fn=fn, crop=crop: fn(
                    info, data["records_dir"], "bench", crop, FLAGS.batch_size))
                results.append({"branch": branch, "crop": crop,
                                "images_per_s": round(rate, 1)})
                print(f"{branch:12s} crop {crop}: {rate:7.1f} images/s", flush=True)
    finally:
        if FLAGS.work_dir is None:
            shutil.rmtree(work_dir, ignore_errors=True)
    report = {
        "benchmark": "input_pipeline",
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(),
                    "tensorflow": tf.__version__,
                    # Other processes share the CPUs; 1-minute load averages.
                    "load_average_before": round(load_before[0], 2),
                    "load_average_after": round(os.getloadavg()[0], 2)},
        "data": {k: v for k, v in data.items() if k != "records_dir"},
        "batch_size": FLAGS.batch_size,
        "warmup_batches": FLAGS.warmup_batches,
        "num_batches": FLAGS.num_batches,
        "results": results,
    }
    print(f"conversion: {data['conversion_images_per_s']} images/s "
          f"({data['source']})")
    if FLAGS.json:
        with open(FLAGS.json, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
        print(f"wrote {FLAGS.json}")


if __name__ == "__main__":
    app.run(main)
