"""How much the labeled batch's Grad-CAMs (the SGC's training input) change
between ``--labeled_cam_head=training`` (the reference) and ``inference``.

    python benchmarks/labeled_cam_head.py --model_variant=xception_65 --json=/tmp/cam_head.json

Reads labeled batches of a dataset (default: the synthetic demo set, generated
into ``--dataset_dir`` if missing) with the project's input pipeline, runs the
network in training mode on each, and computes both CAMs from the same
features with ``PseudoSegTrainer.labeled_cams``: the reference's (the
classification head in training mode, one dropout mask, channel weights
averaged over the batch) and the clean head's (inference mode, per image).
Per batch it reports the relative L2 difference ``||ref - clean|| / ||clean||``
over the present classes' maps, and the share of positions whose strongest
present class differs. Heads without dropout (ResNet, MobileNetV2) give 0.
Weights: random (seeded), or ``--checkpoint_dir`` (a train_logdir).
"""

if __package__ in (None, ""):
    import os, sys  # pylint: disable=g-multiple-import
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import datetime
import json
import os
import platform

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("model_variant", "xception_65", "DeepLab variant.")
flags.DEFINE_string("dataset", "synthetic_shapes", "Dataset name (see train.py --dataset).")
flags.DEFINE_string("dataset_dir", "/tmp/synthetic_demo", "Records (the demo set is generated "
                    "here when --dataset=synthetic_shapes and it is missing).")
flags.DEFINE_string("split", "labeled", "Pixel-labeled split.")
flags.DEFINE_string("checkpoint_dir", None, "Restore the network from this train_logdir.")
flags.DEFINE_integer("crop", 129, "Square crop side.")
flags.DEFINE_integer("batch", 4, "Batch (the reference's per-clone batch is 4).")
flags.DEFINE_integer("num_batches", 8, "Batches measured.")
flags.DEFINE_integer("seed", 0, "Seed of the weights and the pipeline.")
flags.DEFINE_string("json", None, "Write the results here.")


def main(argv):
    del argv
    import keras
    import numpy as np
    import tensorflow as tf

    from core import run_config, training
    from core.deeplab import build_model
    from datasets import input_pipeline, synthetic
    from datasets.dataset_info import get_dataset_info
    from wss.pseudoseg import PseudoSegTrainer

    keras.utils.set_random_seed(FLAGS.seed)
    if FLAGS.dataset == "synthetic_shapes":
        synthetic.ensure_demo_dataset(FLAGS.dataset_dir)
    info = get_dataset_info(FLAGS.dataset, FLAGS.dataset_dir)
    if FLAGS.checkpoint_dir:
        network = run_config.build_network(run_config.read_run_config(FLAGS.checkpoint_dir))
        training.network_checkpoint(network).restore(
            training.latest_checkpoint(FLAGS.checkpoint_dir)).expect_partial()
    else:
        network = build_model(FLAGS.model_variant, info.num_classes)
    trainer = PseudoSegTrainer(network, info.num_classes, info.ignore_label)
    trainer.prepare(tf.zeros((1, FLAGS.crop, FLAGS.crop, 3)))
    data = input_pipeline.labeled_dataset(info, FLAGS.dataset_dir, FLAGS.split, FLAGS.crop,
                                          FLAGS.batch, seed=FLAGS.seed)
    rows = []
    for batch in data.take(FLAGS.num_batches):
        presence = batch["class_presence"]
        outputs = network(batch["image"], training=True)
        trainer.labeled_cam_head = "training"
        reference, _ = trainer.labeled_cams(outputs, presence)
        trainer.labeled_cam_head = "inference"
        clean, _ = trainer.labeled_cams(outputs, presence)
        reference, clean = reference.numpy(), clean.numpy()
        present = presence.numpy().astype(bool)  # [N, C-1]
        diff = [np.linalg.norm(reference[n][..., present[n]] - clean[n][..., present[n]])
                for n in range(len(present)) if present[n].any()]
        norm = [np.linalg.norm(clean[n][..., present[n]])
                for n in range(len(present)) if present[n].any()]
        strongest = [(reference[n][..., present[n]].argmax(-1)
                      != clean[n][..., present[n]].argmax(-1)).mean()
                     for n in range(len(present)) if present[n].sum() > 1]
        rows.append({"relative_l2": float(np.linalg.norm(diff) / max(np.linalg.norm(norm), 1e-12)),
                     "strongest_class_changed": float(np.mean(strongest)) if strongest else None})
        print(f"batch {len(rows)}: relative L2 {rows[-1]['relative_l2']:.3f}, strongest "
              f"present class changed at {rows[-1]['strongest_class_changed']}", flush=True)
    relative = [r["relative_l2"] for r in rows]
    changed = [r["strongest_class_changed"] for r in rows if r["strongest_class_changed"] is not None]
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model_variant": network.backbone_spec.scope, "dataset": info.name,
        "crop": FLAGS.crop, "batch": FLAGS.batch, "checkpoint_dir": FLAGS.checkpoint_dir,
        "cls_dropout": network.backbone_spec.cls_dropout,
        "relative_l2_median": float(np.median(relative)),
        "relative_l2_range": [float(min(relative)), float(max(relative))],
        "strongest_class_changed_mean": float(np.mean(changed)) if changed else None,
        "batches": rows, "python": platform.python_version(), "tensorflow": tf.__version__,
    }
    print(f"{result['model_variant']}: relative L2 of the labeled CAMs, reference vs clean "
          f"head: median {result['relative_l2_median']:.3f} (range "
          f"{result['relative_l2_range'][0]:.3f}..{result['relative_l2_range'][1]:.3f}); "
          f"strongest present class changed at {result['strongest_class_changed_mean']} "
          f"of the positions (images with 2+ classes)")
    if FLAGS.json:
        with open(FLAGS.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    app.run(main)
