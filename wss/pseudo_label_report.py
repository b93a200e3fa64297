"""Quality of PseudoSeg's pseudo labels: accuracy and calibration per source.

    python -m wss.pseudo_label_report --checkpoint_dir=runs/camvid/b_pseudoseg \\
        --dataset_dir=data/camvid_half --split=unlabeled_321

Runs the weak-view pipeline of a trained PseudoSeg model (``train.py
--mode=pseudoseg``) over a split whose records carry masks, without
augmentation (whole images, as evaluation reads them), and compares three
sources of the pseudo label with the masks (which training never reads for
this split):

* ``decoder``: softmax of the decoder logits p;
* ``sgc``: softmax of the SGC logits m (bilinearly resized to p's size);
* ``fused``: the calibrated fusion gamma softmax(s p) + (1 - gamma) softmax(s m)
  with the run's gamma and logit normalisation (``wss.fusion``).

For each: mIoU, per-class IoU and pixel accuracy of the argmax, and the
expected calibration error (ECE) of its maximum probability: 15 equal-width
confidence bins (bin b holds confidences in [b/15, (b+1)/15), the last bin
also 1.0), ECE = sum_b n_b / N |accuracy_b - mean confidence_b| over the
pixels whose mask is not the ignore label. ECE is reported for the plain
distributions (T = 1) and after the run's sharpening (T, 0.5 by default:
what L_u consumes; sharpening never changes the argmax, so the IoUs are the
same). A reliability diagram (accuracy and mean confidence per bin, both
temperatures) goes to ``<output_dir>/reliability_<split>.png``, the first
``--examples`` images with their truth and the argmax of each source to
``<output_dir>/examples_<split>.png``, the figures to
``<output_dir>/<split>.json`` (or ``--output_json``), and a table to stdout.

Differences from the training step, on purpose: everything runs in inference
mode (moving batch-norm statistics, also for the SGC's batch norm; training
computes the weak-view decoder in training mode unless
``--weak_view_bn=inference``), one image at a time, so the logit
normalisation's root mean square is taken over one image instead of the
training batch. Scores are computed at the decoder's logit resolution
(stride 4), where the pseudo label is used, with masks resized nearest
(aligned corners) as the training monitors do; ``--resolution=image``
upsamples the distributions bilinearly to the mask instead.

The CAM's class mask: the classifier's own predictions (sigmoid >= 0.5),
except for runs trained with ``--weakly``, which use image-level labels, here
the foreground classes of each mask (``--cam_labels`` overrides).

The network and the method settings are rebuilt from
``<checkpoint_dir>/run_config.json`` (its ``model`` and ``pseudoseg``
sections, as ``train.py`` wrote them); the checkpoint's ``network`` and
``sgc`` entries are restored.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

NUM_BINS = 15
SOURCES = ("decoder", "sgc", "fused")


# -- metrics (numpy) ---------------------------------------------------------


def bin_indices(confidences, num_bins=NUM_BINS):
    """Equal-width bin of each confidence in [0, 1]; 1.0 falls in the last bin."""
    return np.clip(np.floor(np.asarray(confidences, np.float64) * num_bins).astype(np.int64),
                   0, num_bins - 1)


class CalibrationStats:
    """Streaming confusion matrix and confidence bins of one pseudo-label source."""

    def __init__(self, num_classes, ignore_label, num_bins=NUM_BINS):
        self.num_classes = num_classes
        self.ignore_label = ignore_label
        self.num_bins = num_bins
        self.confusion = np.zeros((num_classes, num_classes), np.int64)
        self.counts = np.zeros(num_bins, np.int64)
        self.confidence_sums = np.zeros(num_bins, np.float64)
        self.correct = np.zeros(num_bins, np.int64)

    def update(self, probabilities, labels):
        """``probabilities`` ``[..., C]`` (rows sum to 1), ``labels`` ``[...]`` int."""
        probabilities = np.asarray(probabilities, np.float64).reshape(-1, self.num_classes)
        labels = np.asarray(labels).reshape(-1).astype(np.int64)
        keep = (labels != self.ignore_label) & (labels >= 0) & (labels < self.num_classes)
        probabilities, labels = probabilities[keep], labels[keep]
        predictions = probabilities.argmax(axis=-1)
        confidences = probabilities.max(axis=-1)
        np.add.at(self.confusion, (labels, predictions), 1)
        bins = bin_indices(confidences, self.num_bins)
        self.counts += np.bincount(bins, minlength=self.num_bins)
        self.confidence_sums += np.bincount(bins, weights=confidences, minlength=self.num_bins)
        self.correct += np.bincount(bins, weights=(predictions == labels),
                                    minlength=self.num_bins).astype(np.int64)

    def ece(self):
        return expected_calibration_error(self.counts, self.confidence_sums, self.correct)

    def bins(self):
        """Per bin: pixel count, mean confidence and accuracy (None when empty)."""
        rows = []
        for b in range(self.num_bins):
            n = int(self.counts[b])
            rows.append(dict(lower=b / self.num_bins, upper=(b + 1) / self.num_bins, count=n,
                             confidence=self.confidence_sums[b] / n if n else None,
                             accuracy=self.correct[b] / n if n else None))
        return rows

    def iou(self):
        """(mIoU over classes present in the masks or predictions, per-class IoU)."""
        return iou_from_confusion(self.confusion)


def expected_calibration_error(counts, confidence_sums, correct):
    """``sum_b n_b / N |acc_b - conf_b|`` from per-bin counts and sums."""
    counts = np.asarray(counts, np.float64)
    total = counts.sum()
    if total == 0:
        return float("nan")
    gaps = np.abs(np.asarray(correct, np.float64) - np.asarray(confidence_sums, np.float64))
    # n_b |acc_b - conf_b| = |correct_b - sum of confidences_b|
    return float(gaps.sum() / total)


def iou_from_confusion(confusion):
    """mIoU (mean over classes with a non-empty union) and per-class IoU (NaN when empty)."""
    from core.metrics import iou_from_confusion as core_iou

    miou, iou = core_iou(np.asarray(confusion, np.float64))
    return float(miou), iou


# -- the model side (TensorFlow) ---------------------------------------------


def build_trainer(checkpoint_dir, checkpoint_path=None):
    """(trainer, run config, settings, checkpoint path) of a PseudoSeg run, restored.

    The trainer is rebuilt with the method settings ``train.py`` recorded in
    ``run_config.json`` (its ``pseudoseg`` section)."""
    import tensorflow as tf

    from core import run_config, training
    from wss.pseudoseg import PseudoSegTrainer

    run = run_config.read_run_config(checkpoint_dir)
    if run.get("mode") != "pseudoseg":
        raise ValueError(f"{checkpoint_dir} is a {run.get('mode')} run; the report needs a "
                         "PseudoSeg run (train.py --mode=pseudoseg) for the SGC layer")
    if "pseudoseg" not in run:
        raise ValueError(f"{checkpoint_dir}/{run_config.RUN_CONFIG} has no 'pseudoseg' "
                         "section (written by an older train.py): retrain, or add the "
                         "method settings the run used")
    settings = dict(run["pseudoseg"])
    network = run_config.build_network(run)
    dataset = run["dataset"]
    trainer = PseudoSegTrainer(network, dataset["num_classes"], dataset["ignore_label"],
                               **settings)
    crop = run.get("train_crop_size") or [33, 33]
    trainer.prepare(tf.zeros((1, *crop, 3)))
    path = checkpoint_path or training.latest_checkpoint(checkpoint_dir)
    if path is None:
        raise FileNotFoundError(f"no checkpoint in {checkpoint_dir}")
    items = {"network": network}
    if trainer.sgc is not None:
        items["sgc"] = trainer.sgc
    tf.train.Checkpoint(**items).restore(path).expect_partial().assert_existing_objects_matched()
    return trainer, run, settings, path


def make_predict_fn(trainer, settings, cam_labels, resolution):
    """A ``tf.function``: eval batch -> {source: distribution}, labels at the scoring size."""
    import tensorflow as tf

    from core.evaluation import inside_original_extent
    from core.layers import resize_bilinear_align_corners, resize_nearest_align_corners
    from wss import fusion
    from wss.gradcam import predicted_labels

    num_classes, ignore_label = trainer.num_classes, trainer.ignore_label
    temperature = settings["temperature"]

    @tf.function(reduce_retracing=True)
    def predict(batch):
        images = batch["image"]
        inside = inside_original_extent(batch)
        labels = tf.where(inside, tf.cast(batch["label"], tf.int32), ignore_label)
        valid = tf.cast(inside, tf.float32)
        outputs = trainer.network(images, training=False)
        decoder_logits = tf.cast(outputs["logits"], tf.float32)
        if cam_labels == "mask":
            hot = tf.one_hot(labels[..., 0], num_classes + 1)[..., 1:num_classes]  # 1..C-1
            image_labels = tf.cast(tf.reduce_max(hot, axis=[1, 2]) > 0, tf.float32)
        else:
            image_labels = predicted_labels(outputs["cls_logits"])
        plain = {"decoder": tf.nn.softmax(decoder_logits, axis=-1)}
        if trainer.sgc is not None:
            cams = trainer.cams(outputs, image_labels)
            sgc_logits = trainer.sgc_logits(outputs, cams, valid, training=False)
            plain["sgc"] = tf.nn.softmax(fusion.resize_to(sgc_logits, decoder_logits), axis=-1)
            plain["fused"] = fusion.calibrated_fusion(
                decoder_logits, sgc_logits, gamma=settings["fusion_gamma"], temperature=1.0,
                logit_norm=settings["logit_norm"])
        sharpened = {name: fusion.sharpen(p, temperature) for name, p in plain.items()}
        if resolution == "image":
            size = tf.shape(labels)[1:3]
            resize = lambda p: resize_bilinear_align_corners(p, size)  # noqa: E731
            plain = {k: resize(v) for k, v in plain.items()}
            sharpened = {k: resize(v) for k, v in sharpened.items()}
        else:
            labels = resize_nearest_align_corners(labels, tf.shape(decoder_logits)[1:3])
        return plain, sharpened, labels[..., 0], image_labels

    return predict


def run_report(checkpoint_dir, dataset_dir=None, split="val", *, dataset=None,
               checkpoint_path=None, cam_labels="auto", resolution="logits", max_images=0,
               output_dir=None, output_json=None, plot=True, examples=4, verbose=True):
    """Runs the report; returns the result dict (also written as JSON)."""
    import tensorflow as tf

    from datasets.dataset_info import get_dataset_info
    from datasets.input_pipeline import eval_dataset

    trainer, run, settings, path = build_trainer(checkpoint_dir, checkpoint_path)
    dataset_dir = dataset_dir or run["dataset"]["dataset_dir"]
    info = get_dataset_info(dataset or run["dataset"]["name"], dataset_dir)
    if cam_labels == "auto":
        cam_labels = "mask" if settings["weakly"] else "predicted"
    predict = make_predict_fn(trainer, settings, cam_labels, resolution)
    names = [s for s in SOURCES if s == "decoder" or trainer.sgc is not None]
    stats = {(name, sharp): CalibrationStats(info.num_classes, info.ignore_label)
             for name in names for sharp in (False, True)}
    images = 0
    cam_classes = 0.0
    shown = []  # the first ``examples`` images: image, truth, argmax per source
    data = eval_dataset(info, dataset_dir, split, None, 1)
    for batch in data:
        plain, sharpened, labels, image_labels = predict(batch)
        labels = labels.numpy()
        if not np.any(labels != info.ignore_label):
            images += 1
            continue
        for name in names:
            stats[(name, False)].update(plain[name].numpy(), labels)
            stats[(name, True)].update(sharpened[name].numpy(), labels)
        cam_classes += float(tf.reduce_sum(image_labels))
        if plot and len(shown) < examples:
            shown.append(dict(image=batch["image"][0].numpy().astype(np.uint8),
                              truth=labels[0],
                              **{name: np.argmax(plain[name][0].numpy(), axis=-1)
                                 for name in names}))
        images += 1
        if verbose and images % 50 == 0:
            print(f"  {images} images", flush=True)
        if max_images and images >= max_images:
            break
    if not images:
        raise ValueError(f"split {split!r} of {dataset_dir} is empty")
    if not any(s.counts.sum() for s in stats.values()):
        raise ValueError(f"split {split!r} of {dataset_dir} has no masks to compare with")

    sources = {}
    for name in names:
        plain_stats, sharp_stats = stats[(name, False)], stats[(name, True)]
        miou, iou = plain_stats.iou()
        confusion = plain_stats.confusion
        sources[name] = dict(
            miou=miou, per_class_iou=[None if np.isnan(x) else float(x) for x in iou],
            pixel_accuracy=float(np.trace(confusion) / max(confusion.sum(), 1)),
            ece=plain_stats.ece(), ece_sharpened=sharp_stats.ece(),
            mean_confidence=float(plain_stats.confidence_sums.sum() / plain_stats.counts.sum()),
            mean_confidence_sharpened=float(sharp_stats.confidence_sums.sum()
                                            / sharp_stats.counts.sum()),
            bins=plain_stats.bins(), bins_sharpened=sharp_stats.bins(),
            num_pixels=int(plain_stats.counts.sum()))
    output_dir = output_dir or os.path.join(checkpoint_dir, "pseudo_label_report")
    os.makedirs(output_dir, exist_ok=True)
    result = dict(checkpoint=path, split=split, dataset=info.name, dataset_dir=dataset_dir,
                  num_images=images, resolution=resolution, num_bins=NUM_BINS,
                  cam_labels=cam_labels, mean_cam_classes_per_image=cam_classes / images,
                  settings=settings, class_names=list(info.class_names), sources=sources)
    if plot:
        result["reliability_diagram"] = plot_reliability(
            sources, os.path.join(output_dir, f"reliability_{split}.png"),
            title=f"{os.path.basename(os.path.normpath(checkpoint_dir))} on {split} "
                  f"({images} images)", temperature=settings["temperature"])
    if plot and shown:
        result["examples_figure"] = plot_examples(
            shown, names, info.num_classes, info.ignore_label,
            os.path.join(output_dir, f"examples_{split}.png"))
    output_json = output_json or os.path.join(output_dir, f"{split}.json")
    with open(output_json + ".tmp", "w") as f:
        json.dump(result, f, indent=1)
    os.replace(output_json + ".tmp", output_json)
    result["output_json"] = output_json
    return result


def class_colors(num_classes, ignore_label):
    """RGB in [0, 1] per label value: PASCAL's colour map for the classes,
    white for the ignore label (and any value outside 0..C-1)."""
    colors = np.ones((max(num_classes, ignore_label + 1), 3))
    for index in range(num_classes):
        value, bits = index, np.zeros(3, int)
        for shift in range(7, -1, -1):
            for channel in range(3):
                bits[channel] |= ((value >> channel) & 1) << shift
            value >>= 3
        colors[index] = bits / 255.0
    return colors


def plot_examples(examples, names, num_classes, ignore_label, path):
    """One row per image: the image, the truth and each source's argmax
    (pseudo label before any threshold), in PASCAL's colours (ignore: white).
    Returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = class_colors(num_classes, ignore_label)
    columns = ["image", "truth", *names]
    fig, axes = plt.subplots(len(examples), len(columns),
                             figsize=(2.4 * len(columns), 1.8 * len(examples)), squeeze=False)
    for row, example in zip(axes, examples):
        for axis, column in zip(row, columns):
            if column == "image":
                axis.imshow(example["image"])
            else:
                labels = np.where(example[column] < num_classes, example[column], ignore_label)
                axis.imshow(colors[labels], interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
    for axis, column in zip(axes[0], columns):
        axis.set_title(column)
    fig.tight_layout()
    fig.savefig(path + ".tmp.png", dpi=80)
    plt.close(fig)
    os.replace(path + ".tmp.png", path)
    return path


def plot_reliability(sources, path, title="", temperature=0.5):
    """Reliability diagrams (accuracy per confidence bin vs the diagonal), one column
    per source, rows: T = 1 and the run's T. Returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(sources)
    fig, axes = plt.subplots(2, len(names), figsize=(3.6 * len(names), 7.2), squeeze=False)
    for column, name in enumerate(names):
        for row, (key, ece_key, label) in enumerate(
                (("bins", "ece", "T = 1"),
                 ("bins_sharpened", "ece_sharpened", f"sharpened, T = {temperature:g}"))):
            ax = axes[row][column]
            bins = sources[name][key]
            width = 1.0 / len(bins)
            lefts = [b["lower"] for b in bins]
            accuracy = [b["accuracy"] or 0.0 for b in bins]
            confidence = [b["confidence"] if b["confidence"] is not None else
                          b["lower"] + width / 2 for b in bins]
            total = max(sum(b["count"] for b in bins), 1)
            ax.bar(lefts, accuracy, width=width, align="edge", color="tab:blue",
                   edgecolor="black", linewidth=0.5, label="accuracy")
            # Hatched, unfilled: readable over the accuracy bar when the bin is
            # underconfident (confidence below accuracy) as well as above it.
            ax.bar(lefts, [c - a if b["count"] else 0.0
                           for c, a, b in zip(confidence, accuracy, bins)],
                   bottom=accuracy, width=width, align="edge", facecolor="none",
                   hatch="////", edgecolor="tab:red", linewidth=0.5,
                   label="gap to confidence")
            ax.plot([0, 1], [0, 1], "k--", linewidth=1)
            share = ax.twinx()
            share.plot([b["lower"] + width / 2 for b in bins],
                       [b["count"] / total for b in bins], "o-", color="tab:gray",
                       markersize=2.5, linewidth=1)
            share.set_ylim(0, 1)
            share.set_ylabel("share of pixels", color="tab:gray", fontsize=8)
            share.tick_params(axis="y", labelsize=7, colors="tab:gray")
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
            ax.set_xlabel("confidence (max probability)")
            ax.set_ylabel("accuracy")
            ax.set_title(f"{name}, {label}\nECE {100 * sources[name][ece_key]:.2f}%, "
                         f"mIoU {100 * sources[name]['miou']:.1f}", fontsize=9)
            if row == 0 and column == 0:
                ax.legend(loc="upper left", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def format_table(result):
    lines = [f"{'source':<8s} {'mIoU':>7s} {'pix.acc':>8s} {'ECE T=1':>8s} "
             f"{'ECE T=' + format(result['settings']['temperature'], 'g'):>8s} "
             f"{'conf.':>6s}"]
    for name, s in result["sources"].items():
        lines.append(f"{name:<8s} {100 * s['miou']:7.2f} {100 * s['pixel_accuracy']:8.2f} "
                     f"{100 * s['ece']:8.2f} {100 * s['ece_sharpened']:8.2f} "
                     f"{100 * s['mean_confidence']:6.1f}")
    return "\n".join(lines)


def main(argv):
    from absl import app

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    FLAGS = flags.FLAGS
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    try:
        result = run_report(FLAGS.checkpoint_dir, FLAGS.dataset_dir, FLAGS.split,
                            dataset=FLAGS.dataset, checkpoint_path=FLAGS.checkpoint_path,
                            cam_labels=FLAGS.cam_labels, resolution=FLAGS.resolution,
                            max_images=FLAGS.max_images, output_dir=FLAGS.output_dir,
                            output_json=FLAGS.output_json, plot=FLAGS.plot,
                            examples=FLAGS.examples)
    except (FileNotFoundError, ValueError) as error:
        print(f"ERROR: {error}", file=sys.stderr)
        sys.exit(1)
    print(f"{result['checkpoint']} on {result['dataset']}/{result['split']} "
          f"({result['num_images']} images, CAM classes: {result['cam_labels']}, "
          f"scored at {result['resolution']} resolution):")
    print(format_table(result))
    names = result["class_names"]
    print("per-class IoU: " + "; ".join(
        f"{name}: " + ", ".join(
            f"{n[:8]} {'-' if v is None else f'{100 * v:.1f}'}"
            for n, v in zip(names, s["per_class_iou"]))
        for name, s in result["sources"].items()))
    for figure in ("reliability_diagram", "examples_figure"):
        if result.get(figure):
            print(f"wrote {result[figure]}")
    print(f"wrote {result['output_json']}")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from absl import app, flags

    flags.DEFINE_string("checkpoint_dir", None, "A train_logdir of train.py --mode=pseudoseg.")
    flags.DEFINE_string("checkpoint_path", None, "A specific checkpoint (default: the latest).")
    flags.DEFINE_string("dataset", None, "Dataset name (default: the training run's).")
    flags.DEFINE_string("dataset_dir", None, "Records directory (default: the training run's).")
    flags.DEFINE_string("split", "val", "A split whose records carry masks.")
    flags.DEFINE_enum("cam_labels", "auto", ["auto", "predicted", "mask"],
                      "CAM class mask: the classifier's predictions (sigmoid >= 0.5) or the "
                      "mask's classes; auto: mask for --weakly runs, else predicted.")
    flags.DEFINE_enum("resolution", "logits", ["logits", "image"],
                      "Score at the decoder's logit resolution (masks resized nearest) or "
                      "at the mask's (distributions resized bilinearly).")
    flags.DEFINE_integer("max_images", 0, "Stop after this many images (0: all).")
    flags.DEFINE_string("output_dir", None,
                        "Where the JSON and PNG go (default: <checkpoint_dir>/"
                        "pseudo_label_report).")
    flags.DEFINE_string("output_json", None, "Result file (default: <output_dir>/<split>.json).")
    flags.DEFINE_boolean("plot", True, "Save the reliability diagram and the examples.")
    flags.DEFINE_integer("examples", 4, "Images in the examples figure.")
    flags.mark_flag_as_required("checkpoint_dir")
    app.run(main)
