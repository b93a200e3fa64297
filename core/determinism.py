"""Bit-identical reruns: what ``--deterministic`` sets, and why.

The cause of issue 12 (two PseudoSeg runs with the same flags and seed ending
with different weights, while supervised runs ended identical) is Grappler's
memory optimizer, which TensorFlow runs on every ``tf.function`` by default.
Its scheduling pass (``SchedulingPass`` in
``tensorflow/core/grappler/optimizers/memory_optimizer.cc``) rewrites an
``AddN`` with more than two inputs, when its static estimate of the graph's
peak memory exceeds 80 % of the device's memory, into a ``TemporaryVariable``
that one ``AssignAdd`` per input accumulates in the order in which the inputs
happen to finish. Floating-point addition is not associative, so the sum
depends on scheduling. In the PseudoSeg train step it rewrites the gradient
sum at the backbone output (classification head + image pooling + ASPP) and
the sums of two decoder batch norms; the supervised step is not rewritten.
The first step then differs by about 1e-5 between processes (and between
two instantiations of the same function in one process), and training
amplifies that to all weights after a few steps.

``configure(True)``:

* turns the memory optimizer off (``RewriterConfig.memory_optimization =
  NO_MEM_OPT``) for every ``tf.function`` instantiated afterwards, in every
  thread (so also MirroredStrategy's replica threads). This is what makes two
  CPU processes identical; one intra-/inter-op thread does not (the
  accumulation order still changed between instantiations);
* calls ``tf.config.experimental.enable_op_determinism()``: deterministic GPU
  kernels (cuDNN algorithms, scatter and segment reductions) and an error for
  ops without a deterministic kernel. On CPU it does not remove the rewrite
  above (measured: two processes still differed).

Seeds stay where they were: ``keras.utils.set_random_seed(--seed)`` in
``train.py`` seeds Python, NumPy, TensorFlow and Keras (the dropout layers'
``SeedGenerator`` initial states), and ``datasets.input_pipeline`` draws every
augmentation from stateless ops seeded per example and sets
``tf.data.Options.deterministic`` whenever a seed is given.

Where the guarantee stops: the same machine (CPU instruction set, oneDNN and
TensorFlow build) and the same replica layout. A different number of
replicas or workers sums in a different order (and multi-worker input
pipelines are seeded per worker), so it gives close, not identical, numbers.
TPU and XLA-compiled steps (``--jit_compile``) are not covered by the
measurements here.

``configure`` reaches into TensorFlow's eager context (``context()._config``):
``tf.config.optimizer.set_experimental_options`` has no switch for the memory
optimizer. ``memory_optimizer_disabled()`` checks the effect, and the
two-process tests in ``tests/test_determinism.py`` check the outcome.
"""

from __future__ import annotations

import tensorflow as tf


def _context():
    from tensorflow.python.eager import context

    return context.context()


def disable_memory_optimizer():
    """Grappler's memory optimizer off for functions instantiated from now on."""
    from tensorflow.core.protobuf import config_pb2, rewriter_config_pb2

    # Discover the devices first: the context imports a construction-time
    # ConfigProto into its device settings once, on discovery, and must not
    # take this one for such.
    tf.config.list_physical_devices()
    ctx = _context()
    config = config_pb2.ConfigProto()
    if ctx._config is not None:  # pylint: disable=protected-access
        config.CopyFrom(ctx._config)  # pylint: disable=protected-access
    config.graph_options.rewrite_options.memory_optimization = (
        rewriter_config_pb2.RewriterConfig.NO_MEM_OPT)
    ctx._config = config  # pylint: disable=protected-access
    # Every thread builds its function-call options from the context's config
    # on first use; drop this thread's cached ones.
    ctx.function_call_options = None


def memory_optimizer_disabled() -> bool:
    """Whether functions this thread instantiates run without the memory optimizer."""
    from tensorflow.core.protobuf import config_pb2, rewriter_config_pb2

    config = config_pb2.ConfigProto()
    serialized = _context().function_call_options.config_proto_serialized
    if serialized:
        config.ParseFromString(serialized)
    return (config.graph_options.rewrite_options.memory_optimization
            == rewriter_config_pb2.RewriterConfig.NO_MEM_OPT)


def configure(deterministic: bool = True):
    """Makes runs with equal seeds bit-identical on one machine (see the module
    docstring). Call before any ``tf.function`` runs (after logical devices are
    configured, e.g. after ``core.distribute.make_strategy``)."""
    if not deterministic:
        return
    disable_memory_optimizer()
    tf.config.experimental.enable_op_determinism()
