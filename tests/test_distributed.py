"""Distributed training on the CPU: replica-count equivalence, multi-worker
processes on 127.0.0.1, mixed precision and XLA."""

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}


def _equivalence(data_dir, tmp_path, *args):
    """tests/replica_equivalence_pipeline.py: one PseudoSeg step of the tiny
    network from train.py's input pipeline on 1 and on 2 replicas."""
    out = tmp_path / "result.json"
    result = subprocess.run([sys.executable, "tests/replica_equivalence_pipeline.py",
                             "--net=tiny", f"--data_dir={data_dir}", f"--out={out}", *args],
                            cwd=REPO, env=ENV, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(out.read_text())


def test_pseudoseg_step_from_the_input_pipeline_on_two_replicas_equals_one(data_dir, tmp_path):
    """With --sync_batch_norm a step on 2 replicas is the 1-replica step of the
    same global batch (the pipeline splits one global batch over the replicas):
    logged values agree, and the update to 1e-3 relative L2, the order of the
    float32 difference of merely permuting the batch on one replica."""
    result = _equivalence(data_dir, tmp_path)
    one, two = result["logs_one"], result["logs_two"]
    assert set(one) == set(two) and {"loss_sgc", "loss_consistency", "acc_pseudo"} <= set(one)
    for name in one:  # global values on both layouts; float32 order noise is ~2e-5
        assert two[name] == pytest.approx(one[name], rel=1e-4, abs=1e-6), name
    assert result["rerun"] == 0.0, result  # deterministic on one layout
    assert result["one_vs_two"] < 1e-3, result
    assert result["permuted"] < 1e-3, result


def test_without_sync_batch_norm_only_batch_statistics_differ(data_dir, tmp_path):
    result = _equivalence(data_dir, tmp_path, "--no-sync_batch_norm")
    # Per-replica batch statistics (2 images each) change the forward pass, so
    # the update differs far beyond float32 noise (documented in docs/distributed.md).
    assert result["one_vs_two"] > 100 * max(result["permuted"], 1e-6), result
    one, two = result["logs_one"], result["logs_two"]
    assert one["learning_rate"] == two["learning_rate"]
    assert two["weight_decay"] == pytest.approx(one["weight_decay"], rel=1e-6)


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from datasets import synthetic

    path = tmp_path_factory.mktemp("synthetic")
    synthetic.generate(str(path), num_train=8, num_val=2, labeled_fraction=2, height=40,
                       width=40, seed=2, verbose=False)
    return path


def _workers(data_dir, logdir, steps, *extra_flags):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    processes = []
    for index in range(2):
        env = {**ENV, "TF_CONFIG": json.dumps({"cluster": cluster,
                                               "task": {"type": "worker", "index": index}})}
        args = [sys.executable, "train.py", "--strategy=multi_worker", "--mode=pseudoseg",
                f"--train_logdir={logdir}", "--dataset=synthetic_shapes",
                f"--dataset_dir={data_dir}", "--train_split=labeled",
                "--train_split_cls=unlabeled", "--model_variant=mobilenet_v2",
                "--train_crop_size=33,33", "--train_batch_size=4", "--cutout_size=8",
                f"--training_number_of_steps={steps}", "--log_steps=1",
                "--save_interval_secs=3600", "--sync_batch_norm", "--use_dropout=false",
                *extra_flags]
        processes.append(subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True))
    outputs = []
    for process in processes:
        output, _ = process.communicate(timeout=600)
        assert process.returncode == 0, output[-3000:]
        outputs.append(output)
    return outputs


def test_two_worker_processes_train_identically_and_only_the_chief_writes(data_dir, tmp_path):
    logdir = tmp_path / "run"
    outputs = _workers(data_dir, logdir, steps=3)
    digests = [re.search(r"final weights digest: (\w+)", o).group(1) for o in outputs]
    assert digests[0] == digests[1]
    assert "exported SavedModel" in outputs[0] and "exported SavedModel" not in outputs[1]
    assert sorted(p.name for p in logdir.glob("ckpt-*.index")) == ["ckpt-3.index"]
    assert len(list((logdir / "train").glob("events.*"))) == 1
    assert (logdir / "export" / "saved_model.pb").exists()

    # Restart both with more steps: both resume from the chief's checkpoint
    # (no second export: the first one was checked).
    outputs = _workers(data_dir, logdir, 5, "--export=false")
    for output in outputs:
        assert f"resumed from {logdir}/ckpt-3; step 3 of 5" in output
    digests = [re.search(r"final weights digest: (\w+)", o).group(1) for o in outputs]
    assert digests[0] == digests[1]
    assert sorted(p.name for p in logdir.glob("ckpt-*.index")) == ["ckpt-3.index",
                                                                   "ckpt-5.index"]


def _pseudoseg_trainer(network="mobilenet_v2", jit_compile=False):
    """A PseudoSeg trainer for 4 classes around MobileNetV2 (no dropout) or
    tests/tiny_network.py ("tiny"), built for 33x33 crops, seed 0."""
    import keras
    import numpy as np

    from core.deeplab import build_model
    from tests.tiny_network import TinyNet
    from wss.pseudoseg import PseudoSegTrainer

    keras.utils.set_random_seed(0)
    model = (TinyNet(4) if network == "tiny"
             else build_model(network, 4, use_dropout=False))
    trainer = PseudoSegTrainer(model, 4, 255, weight_decay=4e-5)
    trainer.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                    jit_compile=jit_compile)
    trainer.prepare(np.zeros((1, 33, 33, 3), np.float32))
    trainer.optimizer.build(trainer.trainable_variables)
    return trainer


def _fixed_pseudoseg_batch():
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    b, s = 2, 33
    valid = np.ones((b, s, s, 1), np.float32)
    valid[:, -4:] = 0
    labeled = dict(image=rng.uniform(0, 255, (b, s, s, 3)).astype(np.float32),
                   label=rng.integers(0, 4, (b, s, s, 1)).astype(np.int32),
                   valid_mask=np.ones((b, s, s, 1), np.float32),
                   class_presence=np.eye(3, dtype=np.float32)[:b])
    unlabeled = dict(weak_image=rng.uniform(0, 255, (b, s, s, 3)).astype(np.float32),
                     strong_image=rng.uniform(0, 255, (b, s, s, 3)).astype(np.float32),
                     valid_mask=valid, strong_valid_mask=valid,
                     monitor_label=rng.integers(0, 4, (b, s, s, 1)).astype(np.int32))
    return tf.data.Dataset.from_tensors(dict(labeled=labeled, unlabeled=unlabeled)).repeat()


def _copy_weights_in_order(source, target):
    """For models whose variable paths differ by their name suffixes: the
    variables pair by creation order."""
    assert [v.shape for v in source.weights] == [v.shape for v in target.weights]
    for variable, copy in zip(source.weights, target.weights):
        copy.assign(variable.numpy())


def _fit_history(trainer, steps):
    history = trainer.fit(_fixed_pseudoseg_batch(), epochs=steps, steps_per_epoch=1,
                          verbose=0, shuffle=False)
    return history.history


def test_xla_train_step_gives_the_same_losses_on_a_fixed_batch():
    """The whole PseudoSeg step (Grad-CAM's tape, SGC, fusion, masks) under XLA;
    the tiny network keeps the compilation short (MobileNetV2's took 2.5 min)."""
    reference = _pseudoseg_trainer("tiny")
    compiled = _pseudoseg_trainer("tiny", jit_compile=True)
    _copy_weights_in_order(reference, compiled)
    expected = _fit_history(reference, 1)
    actual = _fit_history(compiled, 1)
    for name in ("loss", "loss_seg", "loss_cls", "loss_sgc", "loss_consistency"):
        assert actual[name][0] == pytest.approx(expected[name][0], rel=1e-4), name


def _calibrate_and_freeze_batch_norm(trainer, images):
    """Sets every batch norm of the network to the statistics of ``images``
    (one training-mode pass with momentum 0; skipped for None) and freezes it
    (inference mode, also inside the train step). Every layer then sees
    unit-scale activations, and no normalisation over a few positions divides
    by a tiny variance."""
    import keras

    layers = [layer for layer in trainer.network._flatten_layers()
              if isinstance(layer, keras.layers.BatchNormalization)]
    assert layers
    if images is not None:
        for layer in layers:
            layer.momentum = 0.0
        trainer.network(images, training=True)
    for layer in layers:
        layer.trainable = False


def test_mixed_bfloat16_runs_the_deeplab_network_in_bfloat16_and_the_sgc_in_float32():
    import keras
    import numpy as np

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        mixed = _pseudoseg_trainer()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert mixed.network.get_layer("aspp0").compute_dtype == "bfloat16"
    assert mixed.network.get_layer("aspp0").variable_dtype == "float32"
    assert mixed.sgc.compute_dtype == "float32"
    history = _fit_history(mixed, 2)
    for name in ("loss", "loss_seg", "loss_cls", "loss_sgc", "loss_consistency"):
        assert np.all(np.isfinite(history[name])), (name, history[name])


def test_mixed_bfloat16_matches_float32_within_the_rounding_of_bfloat16():
    """Under mixed_bfloat16 the losses differ from float32's only by what
    bfloat16 rounding explains, on any CPU (with or without native bfloat16).

    Robust by construction. A random deep network is chaotic: in MobileNetV2 at
    crop 33, even with calibrated batch norm, the rounding grows from 0.9%
    relative L2 at the first layer to 51% at the last block and 88% at the
    logits, and how far depends on the CPU's bfloat16 kernels. So the bounds are
    checked on tests/tiny_network.py (4 convolutions and a 3-layer head), whose
    batch norm is calibrated on the batch and frozen, so no normalisation
    divides by a small variance. The bounds:

    - logits: bfloat16 keeps 8 significant bits, unit roundoff u = 2**-8. Each
      of the 4 weight layers to the logits rounds its inputs and weights (2
      relative errors of at most u); at unit-scale activations they add like a
      random walk, sqrt(2 * 4) * u = 1.1% relative L2; the bound 5% leaves 4.5x
      (a layer computing garbage or in the wrong precision gives O(1)).
    - L_s (softmax cross-entropy): d CE / d z = p - onehot, whose L1 norm is
      at most 2, so per pixel |dCE| <= 2 max_k |dz_k|; bilinear upsampling and
      the mean over pixels do not increase the maximum: |dL_s| <= 2 max|dz|.
    - L_x (sigmoid cross-entropy): d / d z = sigmoid(z) - y in (-1, 1), so
      |dL_x| <= max|dz_cls|.
    Grad-CAM (normalised by its maximum) and the SGC's training-mode batch norm
    (over 2 x 3 x 3 positions) amplify the rounding by a data-dependent factor,
    so L_sa and L_u are checked finite, not against a bound.
    """
    import keras
    import numpy as np

    reference = _pseudoseg_trainer("tiny")
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        mixed = _pseudoseg_trainer("tiny")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert mixed.network.conv1.compute_dtype == "bfloat16"
    assert mixed.sgc.compute_dtype == "float32"
    batch = next(iter(_fixed_pseudoseg_batch()))
    images = np.concatenate([batch["labeled"]["image"], batch["unlabeled"]["weak_image"],
                             batch["unlabeled"]["strong_image"]])
    _calibrate_and_freeze_batch_norm(reference, images)
    _calibrate_and_freeze_batch_norm(mixed, None)
    _copy_weights_in_order(reference, mixed)  # the float32 statistics, frozen in both

    labeled = batch["labeled"]["image"]
    expected_out = reference.network(labeled, training=True)
    actual_out = mixed.network(labeled, training=True)
    assert actual_out["logits"].dtype.name == "bfloat16"
    z = expected_out["logits"].numpy()
    dz = np.asarray(actual_out["logits"], np.float32) - z
    dz_cls = (np.asarray(actual_out["cls_logits"], np.float32)
              - expected_out["cls_logits"].numpy())
    relative = np.linalg.norm(dz) / np.linalg.norm(z)
    assert 0 < relative < 0.05, relative  # 0: the policy did nothing

    expected = _fit_history(reference, 1)
    actual = _fit_history(mixed, 1)
    for name in ("loss", "loss_seg", "loss_cls", "loss_sgc", "loss_consistency"):
        assert np.isfinite(actual[name][0]), name
    assert abs(actual["loss_seg"][0] - expected["loss_seg"][0]) <= 2 * np.abs(dz).max()
    assert abs(actual["loss_cls"][0] - expected["loss_cls"][0]) <= np.abs(dz_cls).max()


