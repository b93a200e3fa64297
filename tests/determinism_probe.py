"""Grappler's memory optimizer and ``core.determinism``, on a sum large enough
for the optimizer to rewrite (see core/determinism.py).

Run as a script with ``TF_DUMP_GRAPH_PREFIX=<dir>`` and
``TF_CPP_VMODULE=meta_optimizer=2`` (TensorFlow then writes every function's
graph after Grappler to <dir>, settings it reads at start-up):

    python tests/determinism_probe.py --out=result.json

A ``tf.function`` adds four 16M-element maps of one input (320 MB of
tensors, above 80% of the 256 MB TensorFlow assumes for the CPU). Writes
``{"default": {"rewritten_sums": n, "distinct_results": k}, "disabled": ...}``:
the ``TemporaryVariable`` nodes (one per ``AddN`` turned into an accumulation
in thread-timing order) in the optimised graph, and how many different
results ``--instances`` fresh instantiations of the function computed, with
TensorFlow's defaults and after ``core.determinism.configure(True)``.
"""

import argparse
import glob
import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--size", type=int, default=16_000_000)
    parser.add_argument("--instances", type=int, default=6)
    args = parser.parse_args()
    dump_dir = os.environ["TF_DUMP_GRAPH_PREFIX"]

    import tensorflow as tf

    from core import determinism

    x = tf.random.stateless_uniform([args.size], [1, 2]) * 10

    def instantiate():
        """A fresh function: Grappler optimises each instantiation anew."""

        @tf.function
        def large_sum(x):
            return tf.add_n([tf.sin(x) * 1e3, tf.cos(x) * 1e-3, tf.exp(-x), tf.tanh(x) * 7])

        before = set(glob.glob(os.path.join(dump_dir, "*.pbtxt")))
        result = large_sum(x).numpy()
        graphs = set(glob.glob(os.path.join(dump_dir, "*.pbtxt"))) - before
        if not graphs:
            raise SystemExit("no graphs dumped: set TF_DUMP_GRAPH_PREFIX and "
                             "TF_CPP_VMODULE=meta_optimizer=2")
        rewritten = max(open(g).read().count('op: "TemporaryVariable"') for g in graphs)
        return rewritten, hashlib.sha256(result.tobytes()).hexdigest()

    def probe():
        runs = [instantiate() for _ in range(args.instances)]
        return {"rewritten_sums": max(r for r, _ in runs),
                "distinct_results": len({d for _, d in runs})}

    result = {"default": probe()}
    determinism.configure(True)
    result["disabled"] = probe()
    result["memory_optimizer_disabled"] = determinism.memory_optimizer_disabled()
    with open(args.out, "w") as f:
        json.dump(result, f)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
