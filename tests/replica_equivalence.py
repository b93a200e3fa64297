"""One training step on R logical CPU replicas vs one replica, same global batch.

Run as a script (logical devices must be configured before TensorFlow starts):

    python tests/replica_equivalence.py --mode=pseudoseg --sync_batch_norm --out=result.json

Writes the largest weight difference (relative to the weight's scale) over all
network and method weights, including batch-norm moving statistics, and both
runs' logged losses and metrics.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from core import distribute  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["supervised", "pseudoseg"], default="pseudoseg")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--sync_batch_norm", action="store_true")
    parser.add_argument("--weakly", action="store_true")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    distribute.split_cpu(args.replicas)

    import keras
    import numpy as np
    import tensorflow as tf

    from core.deeplab import build_model
    from core.trainer_model import SupervisedSegmenter
    from wss.pseudoseg import PseudoSegTrainer

    num_classes, batch, size = 4, 4, 33
    rng = np.random.default_rng(0)

    def labeled():
        label = rng.integers(0, num_classes, (batch, size, size, 1)).astype(np.int32)
        label[:, :4] = 255
        presence = np.zeros((batch, num_classes - 1), np.float32)
        presence[np.arange(batch), rng.integers(0, num_classes - 1, batch)] = 1
        return dict(image=rng.uniform(0, 255, (batch, size, size, 3)).astype(np.float32),
                    label=label, valid_mask=np.ones((batch, size, size, 1), np.float32),
                    class_presence=presence)

    def unlabeled():
        valid = np.ones((batch, size, size, 1), np.float32)
        valid[:, -6:] = 0
        strong_valid = valid.copy()
        strong_valid[:, 10:22, 10:22] = 0
        return dict(weak_image=rng.uniform(0, 255, (batch, size, size, 3)).astype(np.float32),
                    strong_image=rng.uniform(0, 255, (batch, size, size, 3)).astype(np.float32),
                    valid_mask=valid, strong_valid_mask=strong_valid,
                    monitor_label=rng.integers(0, num_classes, (batch, size, size, 1)).astype(
                        np.int32),
                    image_labels=(rng.random((batch, num_classes - 1)) > 0.5).astype(np.float32))

    data = labeled() if args.mode == "supervised" else dict(labeled=labeled(),
                                                            unlabeled=unlabeled())
    dataset = tf.data.Dataset.from_tensor_slices(data).batch(batch)

    def make(strategy):
        with strategy.scope():
            keras.utils.set_random_seed(1)
            network = build_model("mobilenet_v2", num_classes, atrous_rates=(2, 4, 6),
                                  use_dropout=False, sync_batch_norm=args.sync_batch_norm,
                                  batch_norm_decay=0.9)
            if args.mode == "supervised":
                trainer = SupervisedSegmenter(network, num_classes, 255, weight_decay=1e-3)
            else:
                trainer = PseudoSegTrainer(network, num_classes, 255, weight_decay=1e-3,
                                           weakly=args.weakly, sgc_batch_norm_decay=0.9,
                                           sync_batch_norm=args.sync_batch_norm)
            trainer.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
            trainer.prepare(tf.zeros((1, size, size, 3)))
            trainer.optimizer.build(trainer.trainable_variables)
        return trainer

    one = make(tf.distribute.OneDeviceStrategy("/cpu:0"))
    many = make(tf.distribute.MirroredStrategy(
        [f"/cpu:{i}" for i in range(args.replicas)]))
    # Pair variables by path: the order of ``weights`` may differ between models.
    many_by_path = {v.path: v for v in many.weights}
    assert sorted(many_by_path) == sorted(v.path for v in one.weights)
    for source in one.weights:
        many_by_path[source.path].assign(source.numpy())
    initial = {v.path: v.numpy() for v in one.weights}
    logs = {}
    for name, trainer in (("one", one), ("many", many)):
        history = trainer.fit(dataset, epochs=1, steps_per_epoch=1, verbose=0, shuffle=False)
        logs[name] = {k: float(v[-1]) for k, v in history.history.items()}
    # Compare what the step changed: the update of every variable (weights,
    # momentum-free first step, and batch-norm moving statistics), as the L2
    # norm of the difference relative to the L2 norm of the update.
    differences = {}
    squared_difference = squared_update = 0.0
    for variable in one.weights:
        update_one = variable.numpy() - initial[variable.path]
        update_many = many_by_path[variable.path].numpy() - initial[variable.path]
        difference = float(np.sum((update_one - update_many) ** 2))
        norm = float(np.sum(update_one ** 2))
        squared_difference += difference
        squared_update += norm
        differences[variable.path] = np.sqrt(difference / max(norm, 1e-30))
    worst = max(differences, key=differences.get)
    for path in ("logits.semantic/kernel", "logits.semantic/bias", "aspp0/kernel",
                 "MobilenetV2.Conv/kernel", "MobilenetV2.cls_logits/kernel"):
        print("VAR", path, differences[path], file=sys.stderr)
    result = dict(relative_update_difference=float(np.sqrt(squared_difference / squared_update)),
                  worst_variable=worst, worst_variable_difference=float(differences[worst]),
                  logs=logs, replicas=args.replicas, sync_batch_norm=args.sync_batch_norm,
                  mode=args.mode, weakly=args.weakly)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
