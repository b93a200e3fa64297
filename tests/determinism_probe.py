"""Counts the order-dependent sums Grappler's memory optimizer puts into a
train step (see core/determinism.py), with TensorFlow's defaults and with
``core.determinism.disable_memory_optimizer()``.

Run as a script with ``TF_DUMP_GRAPH_PREFIX=<dir>`` and
``TF_CPP_VMODULE=meta_optimizer=2`` (TensorFlow then writes every function's
graph after Grappler to <dir>); by default the PseudoSeg demo's shapes
(MobileNetV2 with the decoder, 5 classes, crop 81, batch 8):

    python tests/determinism_probe.py --out=result.json [--mode=supervised] [--batch=8]

Writes ``{"default": n, "disabled": m, ...}``: the ``TemporaryVariable``
nodes (one per rewritten ``AddN``) in the train step's graph, each way.
"""

import argparse
import glob
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--mode", choices=["pseudoseg", "supervised"], default="pseudoseg")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=81)
    args = parser.parse_args()
    dump_dir = os.environ["TF_DUMP_GRAPH_PREFIX"]

    import keras
    import numpy as np
    import tensorflow as tf

    from core import determinism
    from core.deeplab import build_model
    from core.trainer_model import SupervisedSegmenter
    from wss.pseudoseg import PseudoSegTrainer

    num_classes, batch, crop = 5, args.batch, args.crop
    keras.utils.set_random_seed(0)
    network = build_model("mobilenet_v2", num_classes, atrous_rates=None,
                          decoder_output_stride=4, batch_norm_decay=0.99)
    if args.mode == "pseudoseg":
        trainer = PseudoSegTrainer(network, num_classes, 255, weight_decay=4e-5,
                                   sgc_batch_norm_decay=0.99)
    else:
        trainer = SupervisedSegmenter(network, num_classes, 255, weight_decay=4e-5)
    trainer.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    trainer.prepare(tf.zeros((1, crop, crop, 3)))
    trainer.optimizer.build(trainer.trainable_variables)

    rng = np.random.default_rng(0)
    shape = (batch, crop, crop)
    ones = np.ones((*shape, 1), np.float32)
    labels = rng.integers(0, num_classes, (*shape, 1)).astype(np.int32)
    labeled = dict(image=rng.uniform(0, 255, (*shape, 3)).astype(np.float32), label=labels,
                   valid_mask=ones, class_presence=np.ones((batch, num_classes - 1), np.float32))
    data = labeled if args.mode == "supervised" else dict(
        labeled=labeled,
        unlabeled=dict(weak_image=rng.uniform(0, 255, (*shape, 3)).astype(np.float32),
                       strong_image=rng.uniform(0, 255, (*shape, 3)).astype(np.float32),
                       valid_mask=ones, strong_valid_mask=ones, monitor_label=labels))
    data = tf.nest.map_structure(tf.constant, data)

    def rewritten_sums():
        """Instantiates a fresh train-step function; counts in its graph."""
        before = set(glob.glob(os.path.join(dump_dir, "*.pbtxt")))
        tf.function(trainer.train_step)(data)
        graphs = set(glob.glob(os.path.join(dump_dir, "*.pbtxt"))) - before
        if not graphs:
            raise SystemExit("no graphs dumped: set TF_DUMP_GRAPH_PREFIX and "
                             "TF_CPP_VMODULE=meta_optimizer=2")
        with open(max(graphs, key=os.path.getsize)) as f:
            return f.read().count('op: "TemporaryVariable"')

    result = {"mode": args.mode, "batch": batch, "crop": crop, "default": rewritten_sums()}
    determinism.disable_memory_optimizer()
    result["disabled"] = rewritten_sums()
    result["memory_optimizer_disabled"] = determinism.memory_optimizer_disabled()
    with open(args.out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
