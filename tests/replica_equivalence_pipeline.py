"""One PseudoSeg step on 1 and on 2 logical CPU replicas, fed by train.py's
real input pipeline (``train.dataset_fn`` through
``distribute_datasets_from_function``), against the float32 noise floor.

    python tests/replica_equivalence_pipeline.py --net=tiny --out=r.json
    python tests/replica_equivalence_pipeline.py --net=demo --out=r.json

Both layouts start from the same weights. Reported, as relative L2 of the
trainable-weight update (the first gradient times the learning rate; moving
statistics excluded, they would dilute the figure):

* ``one_vs_two``: 1 replica against 2 replicas (``--sync_batch_norm``);
* ``rerun``: 1 replica twice (0 unless the step itself is nondeterministic);
* ``permuted``: 1 replica against 1 replica fed the same global batch with its
  examples permuted ([2, 3, 0, 1]), a mathematically identical step: the
  float32 summation-order floor no replica layout can beat.

``--net=tiny``: ``tests/tiny_network.py`` (two batch norms, all synchronised
unless ``--no-sync_batch_norm``);
``--net=demo``: the network of configs/demo.flags (MobileNetV2 and decoder).
Needs the synthetic demo records (generated into ``--data_dir`` if missing).
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--net", choices=["tiny", "demo"], default="tiny")
    parser.add_argument("--data_dir", default="data/synthetic",
                        help="Records with labeled/unlabeled splits (the demo set is "
                             "generated here when the directory has none).")
    parser.add_argument("--sync_batch_norm", action=argparse.BooleanOptionalAction,
                        default=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    import train
    from absl import flags

    from core import distribute

    flags.FLAGS(["train.py", "--flagfile=configs/demo.flags", f"--dataset_dir={args.data_dir}",
                 "--train_logdir=unused", "--mode=pseudoseg", "--train_batch_size=4",
                 "--seed=3", f"--sync_batch_norm={args.sync_batch_norm}",
                 "--use_dropout=false"])
    distribute.split_cpu(2)

    import keras
    import numpy as np
    import tensorflow as tf

    from core import determinism
    from datasets import synthetic
    from datasets.dataset_info import get_dataset_info
    from tests.tiny_network import TinyNet
    from wss.pseudoseg import PseudoSegTrainer

    determinism.configure(True)
    if not os.path.exists(os.path.join(args.data_dir, "dataset_info.json")):
        synthetic.ensure_demo_dataset(args.data_dir)
    info = get_dataset_info("synthetic_shapes", args.data_dir)
    crop = train.validate_flags(2)
    one_device = tf.distribute.OneDeviceStrategy("/cpu:0")
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])

    def make(strategy):
        with strategy.scope():
            keras.utils.set_random_seed(1)
            if args.net == "demo":
                return train.build_everything(strategy, info, crop)[0]
            network = TinyNet(info.num_classes)
            for layer in network._flatten_layers():
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.synchronized = args.sync_batch_norm
            trainer = PseudoSegTrainer(network, info.num_classes, info.ignore_label,
                                       weight_decay=4e-5, sync_batch_norm=args.sync_batch_norm,
                                       sgc_batch_norm_decay=0.99)
            trainer.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
            trainer.prepare(tf.zeros((1, *crop, 3)))
            trainer.optimizer.build(trainer.trainable_variables)
            return trainer

    one, many = make(one_device), make(mirrored)
    # The two models' variables are paired by creation order (their paths
    # differ by the models' name suffixes).
    weights = {id(one): list(one.weights), id(many): list(many.weights)}
    assert [v.shape for v in weights[id(one)]] == [v.shape for v in weights[id(many)]]
    initial = [v.numpy() for v in weights[id(one)]]
    trainable = [i for i, v in enumerate(weights[id(one)]) if v.trainable]
    make_dataset = train.dataset_fn(info, crop)

    def step(trainer, strategy, dataset=None):
        for variable, value in zip(weights[id(trainer)], initial):
            variable.assign(value)
        trainer.optimizer.iterations.assign(0)
        for slot in trainer.optimizer.variables:
            if "momentum" in slot.path:
                slot.assign(tf.zeros_like(slot))
        if dataset is None:
            dataset = strategy.distribute_datasets_from_function(make_dataset)
        history = trainer.fit(dataset, epochs=1, steps_per_epoch=1, verbose=0, shuffle=False)
        update = [weights[id(trainer)][i].numpy() - initial[i] for i in trainable]
        return update, {name: float(values[-1]) for name, values in history.history.items()}

    def relative(a, b):
        return float(np.sqrt(sum(np.sum((x - y) ** 2) for x, y in zip(a, b))
                             / sum(np.sum(x ** 2) for x in a)))

    update_one, logs_one = step(one, one_device)
    update_rerun, _ = step(one, one_device)
    update_many, logs_many = step(many, mirrored)
    batch = next(iter(make_dataset()))
    permuted = tf.nest.map_structure(lambda t: tf.gather(t, [2, 3, 0, 1]), batch)
    update_permuted, logs_permuted = step(one, one_device,
                                          tf.data.Dataset.from_tensors(permuted).repeat())
    result = dict(net=args.net, one_vs_two=relative(update_one, update_many),
                  rerun=relative(update_one, update_rerun),
                  permuted=relative(update_one, update_permuted),
                  sync_batch_norm=args.sync_batch_norm, logs_one=logs_one, logs_two=logs_many,
                  logs_permuted=logs_permuted)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
