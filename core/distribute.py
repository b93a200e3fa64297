"""Choosing a ``tf.distribute`` strategy, and who writes files.

* ``default``: one device.
* ``mirrored``: ``MirroredStrategy`` over all visible GPUs, or over
  ``num_cpu_replicas`` logical CPU devices (for debugging without GPUs).
* ``multi_worker``: ``MultiWorkerMirroredStrategy`` configured from ``TF_CONFIG``.
* ``tpu``: ``TPUStrategy`` on the TPU at ``tpu`` (a name or grpc address).

Logical CPU devices must be configured before TensorFlow initialises its
runtime, so ``make_strategy`` must run before any other TensorFlow op.
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")


def split_cpu(num_replicas: int):
    """Splits the first physical CPU into ``num_replicas`` logical devices."""
    cpus = tf.config.list_physical_devices("CPU")
    # Neither call initialises the runtime (list_logical_devices would, and
    # then no split is possible any more).
    configured = tf.config.get_logical_device_configuration(cpus[0])
    if configured is not None and len(configured) == num_replicas:
        return
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(num_replicas)])
    except RuntimeError as error:
        current = tf.config.list_logical_devices("CPU")
        if len(current) == num_replicas:
            return
        raise RuntimeError(
            f"cannot split the CPU into {num_replicas} devices: TensorFlow is already "
            f"initialised with {len(current)} (call make_strategy first)") from error


def make_strategy(name: str = "default", num_cpu_replicas: int = 0,
                  tpu: str | None = None) -> tf.distribute.Strategy:
    if name not in STRATEGIES:
        raise ValueError(f"--strategy must be one of {', '.join(STRATEGIES)}, got {name!r}")
    if num_cpu_replicas and name not in ("mirrored", "multi_worker"):
        raise ValueError("--num_cpu_replicas needs --strategy=mirrored (or multi_worker)")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        if num_cpu_replicas:
            split_cpu(num_cpu_replicas)
            devices = [f"/cpu:{i}" for i in range(num_cpu_replicas)]
            return tf.distribute.MirroredStrategy(devices=devices)
        if not tf.config.list_physical_devices("GPU"):
            raise ValueError("--strategy=mirrored found no GPU; pass --num_cpu_replicas=N "
                             "to mirror over logical CPU devices")
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("--strategy=multi_worker needs the TF_CONFIG environment "
                             "variable (cluster and task); see README")
        if num_cpu_replicas:
            split_cpu(num_cpu_replicas)
        return tf.distribute.MultiWorkerMirroredStrategy()
    if not tpu:
        raise ValueError("--strategy=tpu needs --tpu (TPU name or grpc:// address)")
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def task_info() -> tuple[str | None, int]:
    """(task type, task index) from ``TF_CONFIG``; (None, 0) without it."""
    config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    task = config.get("task", {})
    return task.get("type"), int(task.get("index", 0))


def is_chief() -> bool:
    """The chief writes checkpoints, summaries and exports: the ``chief`` task,
    or worker 0 when the cluster has no chief, or the only process."""
    task_type, index = task_info()
    if task_type is None:
        return True
    config = json.loads(os.environ["TF_CONFIG"])
    if "chief" in config.get("cluster", {}):
        return task_type == "chief"
    return task_type == "worker" and index == 0
