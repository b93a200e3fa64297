"""Semi-supervised study on CamVid: supervised vs PseudoSeg at 1/8 labels.

    python benchmarks/camvid.py --work_dir=/tmp/camvid_study              # all runs
    python benchmarks/camvid.py --work_dir=/tmp/camvid_study --runs=a,b

Steps, each skipped when its output already exists (so an interrupted study
resumes; an interrupted training resumes from its last checkpoint):

1. Half-resolution copy of CamVid train and val (``--camvid_dir``, 480x360 ->
   240x180 with ``--scale=0.5``): images resized bilinearly (antialiased, PNG,
   so nothing is lost to re-encoding), masks nearest (void 11 kept).
2. ``datasets/make_splits.py`` draws 46 labeled ids of the 367 train images
   (1/8, ``--seed``, every class covered) and writes the other 321 as the
   unlabeled list.
3. ``datasets/build_folder.py`` converts train (with ``--class_labels``, the
   classes of each whole mask, which the weakly mode reads as image-level
   labels) plus the splits ``labeled_46`` and ``unlabeled_321``, and val.
4. For each run in ``--runs`` (a flagfile ``configs/camvid/<id>_*.flags``):
   ``train.py --flagfile=... --train_logdir=<work_dir>/runs/<name>
   --dataset_dir=<work_dir>/records``, then ``eval.py`` on val (whole
   180x240 images), then for PseudoSeg runs ``wss.pseudo_label_report`` on the
   unlabeled split (its masks are never used in training).
   (a) supervised on the 46, (b) PseudoSeg with the 321 unlabeled,
   (c) PseudoSeg weakly (image-level labels on the 321), (d) supervised on all
   367, (e) = (b) with ``--weak_view_bn=inference``; further ids are variants.
5. ``<work_dir>/summary.json``: per run mIoU, per-class IoU, pixel accuracy,
   training time, the last logged pseudo-label monitors and the quality
   report; a table is printed.

Logs go to ``<work_dir>/logs/<name>.{train,eval,report}.log``.
"""

if __package__ in (None, ""):
    import os, sys  # pylint: disable=g-multiple-import
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import datetime
import glob
import json
import os
import platform
import subprocess
import sys
import time

from absl import app, flags

FLAGS = flags.FLAGS
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

flags.DEFINE_string("work_dir", None, "Where the resized data, records, runs and logs go.")
flags.DEFINE_string("camvid_dir", os.path.join(REPO, "..", "shared", "data", "camvid"),
                    "CamVid root (images/<split>, labels/<split>, <split>.txt).")
flags.DEFINE_float("scale", 0.5, "Resize factor of images and masks.")
flags.DEFINE_integer("num_labeled", 46, "Pixel-labeled images drawn from train (1/8).")
flags.DEFINE_integer("seed", 0, "Seed of the labeled draw.")
flags.DEFINE_list("runs", ["a", "b", "c", "d", "e"],
                  "Run ids: configs/camvid/<id>_*.flags (a, b, c, d, e, or a variant's id).")
flags.DEFINE_string("config_dir", os.path.join(REPO, "configs", "camvid"),
                    "Where the run flagfiles are.")
flags.DEFINE_list("extra_train_flags", [],
                  "Flags appended to every train.py command (e.g. "
                  "--training_number_of_steps=20 for a smoke test).")
flags.DEFINE_boolean("report", True, "Run the pseudo-label quality report on PseudoSeg runs.")
flags.DEFINE_string("summary", None, "Summary JSON (default: <work_dir>/summary.json).")
flags.mark_flag_as_required("work_dir")

CLASSES = ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence",
           "Car", "Pedestrian", "Bicyclist"]
IGNORE_LABEL = 11
RUN_TITLES = {
    "a": "(a) supervised, 46 labeled",
    "b": "(b) PseudoSeg, 46 labeled + 321 unlabeled",
    "c": "(c) PseudoSeg weakly, 46 labeled + 321 image-level",
    "d": "(d) supervised, all 367 labeled (ceiling)",
    "e": "(e) = (b) with --weak_view_bn=inference",
    "f": "(f) = (b) with --pseudo_label_threshold=0.8",
    "g": "(g) = (b) with --pseudo_src=decoder",
    "h": "(a) with seed 1",
    "i": "(d) with seed 1",
    "j": "(a) with 3000 steps",
    "k": "(d) with 3000 steps",
}


def log(message):
    print(f"[{datetime.datetime.now():%H:%M:%S}] {message}", flush=True)


def run_command(args, log_path, env=None):
    """Runs ``args`` in the repo root, output to ``log_path``; raises on failure."""
    log(f"$ {' '.join(args)}  > {log_path}")
    start = time.monotonic()
    with open(log_path, "a") as out:
        out.write(f"\n$ {' '.join(args)}\n")
        out.flush()
        result = subprocess.run(args, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
                                     "PYTHONUNBUFFERED": "1", **(env or {})})
    seconds = time.monotonic() - start
    if result.returncode:
        raise RuntimeError(f"{args[1]} failed (exit {result.returncode}) after "
                           f"{seconds:.0f} s; see {log_path}")
    return seconds


# -- data -----------------------------------------------------------------------


def resize_split(split, source_dir):
    """Writes ``source_dir/{images,labels}/<split>/<id>.png`` at ``--scale``."""
    import numpy as np
    from PIL import Image

    root = os.path.abspath(FLAGS.camvid_dir)
    with open(os.path.join(root, f"{split}.txt")) as f:
        ids = [line.strip() for line in f if line.strip()]
    image_out = os.path.join(source_dir, "images", split)
    label_out = os.path.join(source_dir, "labels", split)
    os.makedirs(image_out, exist_ok=True)
    os.makedirs(label_out, exist_ok=True)
    for image_id in ids:
        image = Image.open(os.path.join(root, "images", split, f"{image_id}.jpg")).convert("RGB")
        mask = Image.open(os.path.join(root, "labels", split, f"{image_id}.png"))
        if mask.mode not in ("L", "P"):
            raise ValueError(f"{image_id}: mask mode {mask.mode}, expected single channel")
        size = (round(image.width * FLAGS.scale), round(image.height * FLAGS.scale))
        # Pillow's bilinear filter widens its support when shrinking (antialiased).
        image.resize(size, Image.BILINEAR).save(os.path.join(image_out, f"{image_id}.png"))
        values = np.asarray(mask)
        Image.fromarray(values).resize(size, Image.NEAREST).save(
            os.path.join(label_out, f"{image_id}.png"))
    with open(os.path.join(source_dir, f"{split}.txt"), "w") as f:
        f.write("\n".join(ids) + "\n")
    return len(ids)


def prepare_data(work_dir):
    """Resized copy, labeled/unlabeled lists and records; returns paths and names."""
    source_dir = os.path.join(work_dir, "source")
    records_dir = os.path.join(work_dir, "records")
    splits_dir = os.path.join(work_dir, "splits")
    logs_dir = os.path.join(work_dir, "logs")
    os.makedirs(splits_dir, exist_ok=True)
    os.makedirs(logs_dir, exist_ok=True)
    for split in ("train", "val"):
        if not os.path.exists(os.path.join(source_dir, f"{split}.txt")):
            log(f"resizing CamVid {split} by {FLAGS.scale} into {source_dir}")
            count = resize_split(split, source_dir)
            log(f"  {count} images")
    num_train = sum(1 for line in open(os.path.join(source_dir, "train.txt")) if line.strip())
    labeled_name = f"labeled_{FLAGS.num_labeled}"
    unlabeled_name = f"unlabeled_{num_train - FLAGS.num_labeled}"
    labeled_list = os.path.join(splits_dir, f"{labeled_name}.txt")
    unlabeled_list = os.path.join(splits_dir, f"{unlabeled_name}.txt")
    if not os.path.exists(unlabeled_list):
        run_command([sys.executable, "datasets/make_splits.py",
                     f"--list_file={source_dir}/train.txt",
                     f"--label_dir={source_dir}/labels/train",
                     f"--ignore_label={IGNORE_LABEL}", f"--num_labeled={FLAGS.num_labeled}",
                     f"--seed={FLAGS.seed}", f"--labeled_list={labeled_list}",
                     f"--unlabeled_list={unlabeled_list}"],
                    os.path.join(logs_dir, "make_splits.log"))
    common = [f"--output_dir={records_dir}", "--dataset_name=camvid", "--num_classes=11",
              f"--ignore_label={IGNORE_LABEL}", f"--class_names={','.join(CLASSES)}",
              "--num_shards=4"]
    if not glob.glob(os.path.join(records_dir, f"{unlabeled_name}-*")):
        run_command([sys.executable, "datasets/build_folder.py",
                     f"--image_dir={source_dir}/images/train",
                     f"--label_dir={source_dir}/labels/train",
                     f"--list_file={source_dir}/train.txt", "--split_name=train",
                     f"--split_list={labeled_name}={labeled_list}",
                     f"--split_list={unlabeled_name}={unlabeled_list}",
                     "--class_labels", *common],
                    os.path.join(logs_dir, "build_folder.log"))
    if not glob.glob(os.path.join(records_dir, "val-*")):
        run_command([sys.executable, "datasets/build_folder.py",
                     f"--image_dir={source_dir}/images/val",
                     f"--label_dir={source_dir}/labels/val",
                     f"--list_file={source_dir}/val.txt", "--split_name=val", *common],
                    os.path.join(logs_dir, "build_folder.log"))
    return dict(records_dir=records_dir, labeled_split=labeled_name,
                unlabeled_split=unlabeled_name, num_train=num_train)


# -- runs -----------------------------------------------------------------------


def flagfile_of(run_id):
    matches = sorted(glob.glob(os.path.join(FLAGS.config_dir, f"{run_id}_*.flags")))
    if len(matches) != 1:
        raise app.UsageError(f"run {run_id!r}: expected one {FLAGS.config_dir}/{run_id}_*.flags, "
                             f"found {matches}")
    return matches[0]


def read_flagfile(path, seen=None):
    """{flag: value} of a flagfile, nested --flagfile included (last one wins)."""
    values = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line.startswith("--"):
                continue
            name, _, value = line[2:].partition("=")
            if name == "flagfile":
                values.update(read_flagfile(os.path.join(REPO, value)))
            elif name == "atrous_rates":
                values.setdefault(name, [])
                values[name] = values[name] + [value]
            else:
                values[name] = value
    return values


def last_scalars(logdir):
    """The last logged value of every ``train/*`` scalar of a run."""
    import tensorflow as tf

    values = {}
    for path in sorted(glob.glob(os.path.join(logdir, "train", "events.*"))):
        try:
            for event in tf.compat.v1.train.summary_iterator(path):
                for value in event.summary.value:
                    if value.tag.startswith("train/"):
                        step, _ = values.get(value.tag[6:], (-1, None))
                        if event.step >= step:
                            values[value.tag[6:]] = (
                                event.step, float(tf.make_ndarray(value.tensor)))
        except Exception:  # a truncated event file of a running job
            continue
    return {name: value for name, (_, value) in values.items()}


def do_run(run_id, data, work_dir):
    flagfile = flagfile_of(run_id)
    name = os.path.splitext(os.path.basename(flagfile))[0]
    settings = read_flagfile(flagfile)
    logdir = os.path.join(work_dir, "runs", name)
    logs_dir = os.path.join(work_dir, "logs")
    steps = int(next((f.split("=", 1)[1] for f in reversed(FLAGS.extra_train_flags)
                      if f.startswith("--training_number_of_steps=")),
                     settings["training_number_of_steps"]))
    result = dict(run=run_id, name=name, title=RUN_TITLES.get(run_id, name),
                  flagfile=os.path.relpath(flagfile, REPO), logdir=logdir,
                  mode=settings.get("mode"), steps=steps)
    timing_path = os.path.join(logdir, "timing.json")
    timing = json.load(open(timing_path)) if os.path.exists(timing_path) else {}

    import tensorflow as tf

    latest = tf.train.latest_checkpoint(logdir) if os.path.isdir(logdir) else None
    if latest and int(latest.rsplit("-", 1)[-1]) >= steps:
        log(f"{name}: trained ({latest})")
    else:
        train_args = [sys.executable, "train.py", f"--flagfile={os.path.relpath(flagfile, REPO)}",
                      f"--train_logdir={logdir}", f"--dataset_dir={data['records_dir']}",
                      *FLAGS.extra_train_flags]
        seconds = run_command(train_args, os.path.join(logs_dir, f"{name}.train.log"))
        timing["train_seconds"] = timing.get("train_seconds", 0.0) + seconds
        timing["train_command"] = " ".join(train_args[1:])
        with open(timing_path, "w") as f:
            json.dump(timing, f, indent=1)
        latest = tf.train.latest_checkpoint(logdir)
    result.update(timing)
    eval_path = os.path.join(logdir, "eval_val.json")
    evaluated = json.load(open(eval_path)) if os.path.exists(eval_path) else None
    if evaluated is None or evaluated.get("evaluated") != latest:
        run_command([sys.executable, "eval.py", f"--checkpoint_dir={logdir}", "--eval_split=val",
                     "--eval_crop_size=none", f"--output_json={eval_path}"],
                    os.path.join(logs_dir, f"{name}.eval.log"))
        evaluated = json.load(open(eval_path))
    result.update(miou=evaluated["miou"], per_class_iou=evaluated["per_class_iou"],
                  pixel_accuracy=evaluated["pixel_accuracy"], checkpoint=latest)
    result["last_logged"] = last_scalars(logdir)
    if settings.get("mode") == "pseudoseg" and FLAGS.report:
        report_dir = os.path.join(logdir, "pseudo_label_report")
        report_path = os.path.join(report_dir, f"{data['unlabeled_split']}.json")
        report = json.load(open(report_path)) if os.path.exists(report_path) else None
        if report is None or report.get("checkpoint") != latest:
            try:
                run_command([sys.executable, "-m", "wss.pseudo_label_report",
                             f"--checkpoint_dir={logdir}",
                             f"--dataset_dir={data['records_dir']}",
                             f"--split={data['unlabeled_split']}",
                             f"--output_dir={report_dir}", f"--output_json={report_path}"],
                            os.path.join(logs_dir, f"{name}.report.log"))
                report = json.load(open(report_path))
            except RuntimeError as error:  # the accuracy figures stand without it
                log(f"{name}: pseudo-label report failed: {error}")
        if report is not None:
            result["pseudo_label_report"] = {k: report[k] for k in ("sources", "split")
                                             if k in report}
    log(f"{name}: mIoU {100 * result['miou']:.2f}")
    return result


def print_table(results):
    header = f"| run | mIoU | " + " | ".join(c[:5] for c in CLASSES) + " |"
    print(header)
    print("|" + "---|" * (2 + len(CLASSES)))
    for r in results:
        ious = " | ".join("-" if x is None else f"{100 * x:.1f}" for x in r["per_class_iou"])
        print(f"| {r['title']} | {100 * r['miou']:.2f} | {ious} |")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    work_dir = os.path.abspath(FLAGS.work_dir)
    os.makedirs(work_dir, exist_ok=True)
    flagfiles = {run_id: flagfile_of(run_id) for run_id in FLAGS.runs}  # fail early
    log(f"CamVid study in {work_dir}: runs {', '.join(flagfiles)}")
    data = prepare_data(work_dir)
    summary_path = FLAGS.summary or os.path.join(work_dir, "summary.json")
    summary = json.load(open(summary_path)) if os.path.exists(summary_path) else {}
    summary.setdefault("runs", {})
    failed = []
    for run_id in FLAGS.runs:
        load = os.getloadavg()[0]
        try:
            result = do_run(run_id, data, work_dir)
        except RuntimeError as error:  # keep going with the other runs
            log(f"run {run_id} failed: {error}")
            failed.append(run_id)
            continue
        result["load_average_at_start"] = round(load, 2)
        summary["runs"][run_id] = result
        summary.update(
            date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            machine={"cpus": os.cpu_count(), "platform": platform.platform(),
                     "python": platform.python_version()},
            data={k: v for k, v in data.items()}, scale=FLAGS.scale,
            num_labeled=FLAGS.num_labeled, seed=FLAGS.seed, classes=CLASSES)
        with open(summary_path + ".tmp", "w") as f:
            json.dump(summary, f, indent=1)
        os.replace(summary_path + ".tmp", summary_path)
    print()
    print_table([summary["runs"][k] for k in sorted(summary["runs"])])
    log(f"wrote {summary_path}")
    if failed:
        log(f"failed runs: {', '.join(failed)}")
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
