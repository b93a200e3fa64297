"""Cost of a PseudoSeg training step against a supervised step of the same model.

    python benchmarks/step_cost.py --model_variant=mobilenet_v2 --crop=129 --batch=4 \\
        --weak_view_bn=training --json=/tmp/step_cost.json

Builds, in one process, the supervised trainer (``core.trainer_model.
SupervisedSegmenter``: L_s + L_x) and the PseudoSeg trainer
(``wss.pseudoseg.PseudoSegTrainer``) around two identically initialised
DeepLabv3+ networks (same variant, output stride, ASPP rates, decoder, class
count), compiles them as ``train.py`` does, and times a ``tf.function`` of
each ``train_step`` (optionally XLA-compiled) on one fixed random batch:
``--batch`` labeled images for the supervised step; ``--batch`` labeled plus
``--batch`` unlabeled images (weak and strong view) for the PseudoSeg step,
with monitor masks as CamVid/VOC records carry them. After ``--warmup_steps``
steps of each, ``--repetitions`` repetitions alternate supervised and PseudoSeg
timings of ``--steps_per_repetition`` steps each (so load changes on a shared
machine hit both alike); the median seconds per step of each is reported, and
``ratio = median PseudoSeg / median supervised``.

The number of network passes per step (forward passes, by batch-norm mode) is
counted while the step is traced. ``--pieces`` also times the parts of the
PseudoSeg step separately (forward in training / inference mode, forward +
backward, Grad-CAM Jacobian, SGC), which is where docs/benchmarks.md says the
time goes.
"""

if __package__ in (None, ""):
    import os, sys  # pylint: disable=g-multiple-import
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import datetime
import json
import os
import platform
import statistics
import time

from absl import app, flags

FLAGS = flags.FLAGS

flags.DEFINE_string("model_variant", "mobilenet_v2",
                    "xception_65, resnet_v1_50_beta, resnet_v1_101_beta or mobilenet_v2.")
flags.DEFINE_integer("crop", 129, "Square crop side (a multiple of the output stride plus 1).")
flags.DEFINE_integer("batch", 4, "Global batch (labeled; PseudoSeg adds as many unlabeled).")
flags.DEFINE_enum("weak_view_bn", "training", ["training", "inference"],
                  "PseudoSeg's weak-view batch-norm mode (see wss/pseudoseg.py).")
flags.DEFINE_boolean("weakly", False, "PseudoSeg with image-level labels.")
flags.DEFINE_integer("num_classes", 21, "Classes C (21: PASCAL VOC).")
flags.DEFINE_integer("output_stride", 16, "Output stride.")
flags.DEFINE_list("atrous_rates", ["6", "12", "18"], "ASPP rates (empty: none).")
flags.DEFINE_boolean("decoder", True, "DeepLabv3+ decoder (output stride 4).")
flags.DEFINE_integer("repetitions", 7, "Timed repetitions (median reported).")
flags.DEFINE_integer("steps_per_repetition", 3, "Steps per timed repetition.")
flags.DEFINE_integer("warmup_steps", 3, "Untimed steps of each trainer after tracing.")
flags.DEFINE_boolean("jit_compile", False, "XLA-compile the train steps.")
flags.DEFINE_boolean("deterministic", True,
                     "As train.py's --deterministic (core/determinism.py); false measures "
                     "what it costs.")
flags.DEFINE_boolean("fine_tune_batch_norm", True,
                     "As train.py's flag: false freezes every batch norm (moving statistics).")
flags.DEFINE_float("batch_norm_decay", 0.99, "Moving-average decay of every batch norm.")
flags.DEFINE_boolean("pieces", False, "Also time the pieces of the PseudoSeg step.")
flags.DEFINE_string("json", None, "Write the results to this JSON file.")


def make_batch(num_classes, batch, crop, seed=0):
    """A fixed labeled and unlabeled batch with the keys of docs/design.md."""
    import numpy as np

    rng = np.random.default_rng(seed)
    shape = (batch, crop, crop)

    def image():
        return rng.uniform(0, 255, (*shape, 3)).astype(np.float32)

    label = rng.integers(0, num_classes, (*shape, 1)).astype(np.int32)
    valid = np.ones((*shape, 1), np.float32)
    presence = np.zeros((batch, num_classes - 1), np.float32)
    for i in range(batch):
        values = np.unique(label[i])
        presence[i, values[values > 0] - 1] = 1.0
    strong_valid = valid.copy()
    side = max(crop // 5, 1)
    strong_valid[:, :side, :side] = 0.0
    labeled = dict(image=image(), label=label, valid_mask=valid, class_presence=presence)
    unlabeled = dict(weak_image=image(), strong_image=image(), valid_mask=valid,
                     strong_valid_mask=strong_valid,
                     monitor_label=rng.integers(0, num_classes, (*shape, 1)).astype(np.int32))
    if FLAGS.weakly:
        unlabeled["image_labels"] = (rng.random((batch, num_classes - 1)) < 0.3).astype(
            np.float32)
    return labeled, unlabeled


def build(mode, weak_view_bn="training"):
    """A compiled trainer (optimizer built) around a fresh network, seed 0."""
    import keras
    import tensorflow as tf

    from core.deeplab import build_model
    from core.trainer_model import SupervisedSegmenter, freeze_batch_norm, last_layer_scopes

    keras.utils.set_random_seed(0)
    rates = [int(r) for r in FLAGS.atrous_rates] or None
    network = build_model(FLAGS.model_variant, FLAGS.num_classes, FLAGS.output_stride,
                          atrous_rates=rates, decoder_output_stride=4 if FLAGS.decoder else None,
                          batch_norm_decay=FLAGS.batch_norm_decay)
    if not FLAGS.fine_tune_batch_norm:
        freeze_batch_norm(network)
    weight_decay = 1e-4 if FLAGS.model_variant.startswith("resnet") else 4e-5
    common = dict(weight_decay=weight_decay,
                  last_layers=last_layer_scopes(network, True))
    if mode == "supervised":
        trainer = SupervisedSegmenter(network, FLAGS.num_classes, 255, **common)
    else:
        from wss.pseudoseg import PseudoSegTrainer

        trainer = PseudoSegTrainer(network, FLAGS.num_classes, 255, weakly=FLAGS.weakly,
                                   weak_view_bn=weak_view_bn, sgc_batch_norm_decay=0.99,
                                   **common)
    optimizer = keras.optimizers.SGD(0.001, momentum=0.9)
    trainer.compile(optimizer=optimizer, jit_compile=FLAGS.jit_compile)
    trainer.prepare(tf.zeros((1, FLAGS.crop, FLAGS.crop, 3)))
    optimizer.build(trainer.trainable_variables)
    return trainer


class PassCounter:
    """Counts the network's forward passes (and their ``training`` flag) while a
    step is traced."""

    def __init__(self, network):
        self.network = network
        self.original = network.call
        self.passes = []

    def __enter__(self):
        def call(*args, **kwargs):
            self.passes.append("training" if kwargs.get("training") else "inference")
            return self.original(*args, **kwargs)

        self.network.call = call
        return self

    def __exit__(self, *exc):
        self.network.call = self.original
        del self.network.__dict__["call"]

    def summary(self):
        return {"total": len(self.passes), "training": self.passes.count("training"),
                "inference": self.passes.count("inference")}


def step_function(trainer, batch):
    """A traced ``train_step`` on a fixed batch; returns (fn, passes)."""
    import tensorflow as tf

    fn = tf.function(trainer.train_step, jit_compile=FLAGS.jit_compile)
    with PassCounter(trainer.network) as counter:
        fn.get_concrete_function(batch)
    return fn, counter.summary()


def run_steps(fn, batch, steps):
    """(wall seconds, process CPU seconds) per step. The CPU seconds of all the
    process's threads depend much less on other jobs' load than the wall time."""
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(steps):
        logs = fn(batch)
    float(logs["loss"])  # wait for the last step
    return (time.perf_counter() - start) / steps, (time.process_time() - cpu_start) / steps


def time_pieces(trainer, labeled, unlabeled):
    """Seconds of each piece of the PseudoSeg step (median of the repetitions)."""
    import keras
    import tensorflow as tf

    from wss.gradcam import grad_cam_from_features, predicted_labels

    network = trainer.network
    variables = network.trainable_variables
    endpoint = trainer.gradcam_endpoint
    jit = FLAGS.jit_compile

    @tf.function(jit_compile=jit)
    def forward_training(images):
        return network(images, training=True)["logits"]

    @tf.function(jit_compile=jit)
    def forward_inference(images):
        outputs = network(images, training=False)
        return outputs["logits"], outputs["cls_logits"]

    outputs = network.output
    needed = {endpoint, *trainer.hypercolumn_endpoints}
    backbone_model = keras.Model(network.inputs, {
        "cls_logits": outputs["cls_logits"],
        "endpoints": {name: outputs["endpoints"][name] for name in needed}})

    @tf.function(jit_compile=jit)
    def forward_inference_backbone(images):
        """What Grad-CAM and SGC need: backbone endpoints and classification logits."""
        return backbone_model(images, training=False)

    @tf.function(jit_compile=jit)
    def forward_backward(images, labels, presence):
        with tf.GradientTape() as tape:
            outputs = network(images, training=True)
            loss = (trainer.segmentation_loss(outputs["logits"], labels)
                    + trainer.classification_loss(outputs["cls_logits"], presence))
        return tape.gradient(loss, variables)

    features = network(unlabeled["weak_image"], training=False)
    cam_features = tf.constant(features["endpoints"][endpoint])
    cam_labels = predicted_labels(features["cls_logits"])
    cam_labels = tf.maximum(cam_labels, tf.constant(labeled["class_presence"]))

    @tf.function(jit_compile=jit)
    def gradcam(feature_map, labels):
        return grad_cam_from_features(network.classification_head, feature_map, labels)[0]

    hyper = [tf.constant(features["endpoints"][n]) for n in trainer.hypercolumn_endpoints]
    cams = gradcam(cam_features, cam_labels)

    @tf.function(jit_compile=jit)
    def sgc(hyper_features, cam_maps, valid):
        return trainer.sgc(hyper_features, cam_maps, valid_mask=valid, training=True)

    pieces = {
        "forward_training": lambda: forward_training(unlabeled["weak_image"]),
        "forward_inference": lambda: forward_inference(unlabeled["weak_image"]),
        "forward_inference_backbone": lambda: forward_inference_backbone(
            unlabeled["weak_image"]),
        "forward_backward": lambda: forward_backward(labeled["image"], labeled["label"],
                                                     labeled["class_presence"]),
        "gradcam_jacobian": lambda: gradcam(cam_features, cam_labels),
        "sgc": lambda: sgc(hyper, cams, unlabeled["valid_mask"]),
    }
    for fn in pieces.values():  # trace and warm up
        for _ in range(2):
            tf.nest.map_structure(lambda x: x.numpy(), fn())
    times = {name: [] for name in pieces}
    for _ in range(FLAGS.repetitions):  # interleaved, like the steps
        for name, fn in pieces.items():
            start = time.perf_counter()
            for _ in range(FLAGS.steps_per_repetition):
                out = fn()
            tf.nest.map_structure(lambda x: x.numpy(), out)
            times[name].append((time.perf_counter() - start) / FLAGS.steps_per_repetition)
    results = {name: statistics.median(values) for name, values in times.items()}
    return results


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from core.deeplab import MODEL_VARIANTS

    if FLAGS.model_variant not in MODEL_VARIANTS:
        raise app.UsageError(f"--model_variant must be one of {MODEL_VARIANTS}")
    if (FLAGS.crop - 1) % FLAGS.output_stride:
        raise app.UsageError("--crop must be a multiple of --output_stride plus 1")
    import tensorflow as tf

    from core import determinism

    determinism.configure(FLAGS.deterministic)
    tf.get_logger().setLevel("ERROR")
    load_before = os.getloadavg()
    labeled, unlabeled = make_batch(FLAGS.num_classes, FLAGS.batch, FLAGS.crop)
    labeled_t = {k: tf.constant(v) for k, v in labeled.items()}
    unlabeled_t = {k: tf.constant(v) for k, v in unlabeled.items()}
    pseudo_batch = {"labeled": labeled_t, "unlabeled": unlabeled_t}

    print(f"building {FLAGS.model_variant}, crop {FLAGS.crop}, batch {FLAGS.batch}, "
          f"weak_view_bn={FLAGS.weak_view_bn}, jit_compile={FLAGS.jit_compile}, "
          f"deterministic={FLAGS.deterministic}, fine_tune_batch_norm={FLAGS.fine_tune_batch_norm}",
          flush=True)
    supervised = build("supervised")
    pseudoseg = build("pseudoseg", FLAGS.weak_view_bn)
    start = time.perf_counter()
    supervised_fn, supervised_passes = step_function(supervised, labeled_t)
    pseudoseg_fn, pseudoseg_passes = step_function(pseudoseg, pseudo_batch)
    for _ in range(FLAGS.warmup_steps):
        run_steps(supervised_fn, labeled_t, 1)
        run_steps(pseudoseg_fn, pseudo_batch, 1)
    print(f"traced and warmed up in {time.perf_counter() - start:.1f} s", flush=True)

    supervised_times, pseudoseg_times = [], []
    supervised_cpu, pseudoseg_cpu = [], []
    for repetition in range(FLAGS.repetitions):
        wall, cpu = run_steps(supervised_fn, labeled_t, FLAGS.steps_per_repetition)
        supervised_times.append(wall)
        supervised_cpu.append(cpu)
        wall, cpu = run_steps(pseudoseg_fn, pseudo_batch, FLAGS.steps_per_repetition)
        pseudoseg_times.append(wall)
        pseudoseg_cpu.append(cpu)
        print(f"  repetition {repetition + 1}/{FLAGS.repetitions}: supervised "
              f"{supervised_times[-1]:.3f} s/step, PseudoSeg {pseudoseg_times[-1]:.3f} s/step",
              flush=True)
    supervised_s = statistics.median(supervised_times)
    pseudoseg_s = statistics.median(pseudoseg_times)
    ratio = pseudoseg_s / supervised_s
    pair_ratio = statistics.median(p / s for p, s in zip(pseudoseg_times, supervised_times))

    pieces = time_pieces(pseudoseg, labeled_t, unlabeled_t) if FLAGS.pieces else None
    load_after = os.getloadavg()

    print()
    print(f"| {'step':<28s} | {'s/step (median)':>15s} | {'images/s':>9s} | passes |")
    print(f"|{'-' * 30}|{'-' * 17}|{'-' * 11}|--------|")
    print(f"| {'supervised':<28s} | {supervised_s:15.4f} | "
          f"{FLAGS.batch / supervised_s:9.2f} | {supervised_passes['total']:>6d} |")
    print(f"| {'PseudoSeg (' + FLAGS.weak_view_bn + ')':<28s} | {pseudoseg_s:15.4f} | "
          f"{FLAGS.batch / pseudoseg_s:9.2f} | {pseudoseg_passes['total']:>6d} |")
    print(f"ratio PseudoSeg / supervised: {ratio:.2f} (median of per-repetition ratios "
          f"{pair_ratio:.2f})")
    print(f"network passes per PseudoSeg step: {pseudoseg_passes}")
    print(f"process CPU s/step (median): supervised {statistics.median(supervised_cpu):.4f}, "
          f"PseudoSeg {statistics.median(pseudoseg_cpu):.4f}")
    if pieces:
        print("pieces (s per call, median):")
        for name, seconds in pieces.items():
            print(f"  {name:<27s} {seconds:.4f}")
    print(f"load average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f}")

    if FLAGS.json:
        report = {
            "benchmark": "step_cost",
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                        "python": platform.python_version(), "tensorflow": tf.__version__,
                        "load_average_before": [round(x, 2) for x in load_before],
                        "load_average_after": [round(x, 2) for x in load_after]},
            "settings": {"model_variant": FLAGS.model_variant, "crop": FLAGS.crop,
                         "batch": FLAGS.batch, "weak_view_bn": FLAGS.weak_view_bn,
                         "weakly": FLAGS.weakly, "num_classes": FLAGS.num_classes,
                         "output_stride": FLAGS.output_stride,
                         "atrous_rates": [int(r) for r in FLAGS.atrous_rates],
                         "decoder_output_stride": 4 if FLAGS.decoder else None,
                         "repetitions": FLAGS.repetitions,
                         "steps_per_repetition": FLAGS.steps_per_repetition,
                         "warmup_steps": FLAGS.warmup_steps,
                         "jit_compile": FLAGS.jit_compile,
                         "fine_tune_batch_norm": FLAGS.fine_tune_batch_norm,
                         "intra_op_threads": os.environ.get("TF_NUM_INTRAOP_THREADS"),
                         "deterministic": FLAGS.deterministic},
            "supervised_step_s": round(supervised_s, 5),
            "pseudoseg_step_s": round(pseudoseg_s, 5),
            "ratio": round(ratio, 3),
            "ratio_median_of_pairs": round(pair_ratio, 3),
            "supervised_images_per_s": round(FLAGS.batch / supervised_s, 3),
            "pseudoseg_labeled_images_per_s": round(FLAGS.batch / pseudoseg_s, 3),
            "supervised_passes": supervised_passes,
            "pseudoseg_passes": pseudoseg_passes,
            "supervised_cpu_s_per_step": round(statistics.median(supervised_cpu), 5),
            "pseudoseg_cpu_s_per_step": round(statistics.median(pseudoseg_cpu), 5),
            "supervised_times_s": [round(t, 5) for t in supervised_times],
            "pseudoseg_times_s": [round(t, 5) for t in pseudoseg_times],
        }
        if pieces:
            report["pieces_s"] = {k: round(v, 5) for k, v in pieces.items()}
        with open(FLAGS.json, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
        print(f"wrote {FLAGS.json}")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    app.run(main)
