"""Loading DeepLab TF1 checkpoints: name coverage, round trip, reports and errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from core.checkpoints import (
    checkpoint_variables,
    load_deeplab_checkpoint,
    load_keras_mobilenet_v2,
    save_deeplab_checkpoint,
)
from core.deeplab import MODEL_VARIANTS, build_model

REFERENCE = Path(__file__).resolve().parents[2] / "shared/reference/deeplab_checkpoint_vars"
REPO = Path(__file__).resolve().parents[1]


def _reference_variables(variant):
    path = REFERENCE / f"{variant}.tsv"
    if not path.exists():
        pytest.skip(f"{path} not available")
    names = {}
    for line in path.read_text().splitlines():
        name, shape = line.split("\t")
        names[name] = json.loads(shape)
    return names


def _deeplab_setting(variant):
    # The networks the reference lists describe: DeepLab's MobileNetV2 VOC
    # setting has neither atrous ASPP branches nor a decoder.
    if variant == "mobilenet_v2":
        return dict(atrous_rates=None, decoder_output_stride=None)
    return dict(atrous_rates=(6, 12, 18), decoder_output_stride=4)


@pytest.mark.parametrize("variant", MODEL_VARIANTS)
def test_every_checkpoint_name_maps_to_a_model_weight_of_that_shape(variant):
    reference = _reference_variables(variant)
    model = build_model(variant, 21, **_deeplab_setting(variant))
    ours = {name: list(v.shape) for name, v in checkpoint_variables(model).items()}
    if variant == "mobilenet_v2":  # our own classification head, not DeepLab's
        extra = {"MobilenetV2/cls_logits/weights", "MobilenetV2/cls_logits/biases"}
        assert extra <= set(ours)
        ours = {n: s for n, s in ours.items() if n not in extra}
    assert sorted(set(reference) - set(ours)) == []
    assert sorted(set(ours) - set(reference)) == []
    assert {n: s for n, s in ours.items() if reference[n] != s} == {}


def _randomise(model, seed):
    """Random weights and non-trivial batch-norm statistics."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        if v.path.endswith("moving_variance"):
            v.assign(rng.uniform(0.5, 1.5, v.shape).astype(np.float32))
        elif v.path.endswith("gamma"):
            v.assign(rng.uniform(0.5, 1.5, v.shape).astype(np.float32))
        else:
            scale = 0.1 if len(v.shape) < 4 else np.sqrt(2.0 / np.prod(v.shape[:-1]))
            v.assign((rng.normal(size=v.shape) * scale).astype(np.float32))


@pytest.mark.parametrize("variant", ["mobilenet_v2", "resnet_v1_50_beta"])
def test_round_trip_through_a_tf1_checkpoint_gives_equal_outputs(variant, tmp_path):
    source = build_model(variant, 21)
    _randomise(source, 0)
    prefix = save_deeplab_checkpoint(source, str(tmp_path / "model.ckpt"))
    # Written by tf.compat.v1 Saver: a name-based checkpoint under DeepLab's names.
    names = set(tf.train.load_checkpoint(prefix).get_variable_to_shape_map())
    assert names == set(checkpoint_variables(source))

    target = build_model(variant, 21)
    images = np.random.default_rng(1).uniform(0, 255, (1, 50, 66, 3)).astype(np.float32)
    before = target(images, training=False)
    report = load_deeplab_checkpoint(target, prefix)
    assert len(report.loaded) == len(names)
    assert report.missing == report.unused == report.excluded == []
    expected = source(images, training=False)
    after = target(images, training=False)
    assert not np.allclose(before["logits"], expected["logits"])
    for key in ("logits", "cls_logits"):
        np.testing.assert_array_equal(after[key].numpy(), expected[key].numpy())
    for name, value in expected["endpoints"].items():
        np.testing.assert_array_equal(after["endpoints"][name].numpy(), value.numpy())


def _write_checkpoint(path, tensors):
    with tf.Graph().as_default():
        var_list = {n: tf.compat.v1.Variable(v, name=f"v{i}")
                    for i, (n, v) in enumerate(tensors.items())}
        saver = tf.compat.v1.train.Saver(var_list)
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            return saver.save(session, path, write_meta_graph=False)


def test_imagenet_style_backbone_checkpoint_reports_missing_unused_and_state(tmp_path):
    model = build_model("mobilenet_v2", 21, atrous_rates=None, decoder_output_stride=None)
    backbone = {n: v.numpy() + 1.0 for n, v in checkpoint_variables(model).items()
                if n.startswith("MobilenetV2/") and "cls_logits" not in n}
    tensors = dict(backbone)
    tensors["MobilenetV2/Logits/Conv2d_1c_1x1/weights"] = np.zeros((1, 1, 1280, 1001), np.float32)
    tensors["MobilenetV2/Conv/weights/Momentum"] = np.zeros((3, 3, 3, 32), np.float32)
    tensors["global_step"] = np.int64(5)
    prefix = _write_checkpoint(str(tmp_path / "imagenet.ckpt"), tensors)
    report = load_deeplab_checkpoint(model, str(tmp_path))  # a directory works too
    assert sorted(report.loaded) == sorted(backbone)
    assert report.unused == ["MobilenetV2/Logits/Conv2d_1c_1x1/weights"]
    assert report.training_state == ["MobilenetV2/Conv/weights/Momentum", "global_step"]
    assert "logits/semantic/weights" in report.missing
    assert "aspp0/weights" in report.missing
    variables = checkpoint_variables(model)
    np.testing.assert_array_equal(variables["MobilenetV2/Conv/weights"].numpy(),
                                  backbone["MobilenetV2/Conv/weights"])
    # 272 names in the reference list minus 17 of the heads (3 x 5 + 2 logits).
    assert "loaded 255 variables" in report.summary()
    assert prefix.endswith("imagenet.ckpt")


def test_class_count_mismatch_fails_before_assigning_unless_excluded(tmp_path):
    voc = build_model("mobilenet_v2", 21)
    _randomise(voc, 2)
    prefix = save_deeplab_checkpoint(voc, str(tmp_path / "voc.ckpt"))
    coco = build_model("mobilenet_v2", 81)
    conv_before = coco.get_layer("MobilenetV2.Conv").kernel.numpy()
    with pytest.raises(ValueError, match=r"logits/semantic/weights: checkpoint \[1, 1, 256, 21\] "
                                         r"vs model \[1, 1, 256, 81\]"):
        load_deeplab_checkpoint(coco, prefix)
    np.testing.assert_array_equal(coco.get_layer("MobilenetV2.Conv").kernel.numpy(), conv_before)

    fresh_logits = coco.get_layer("logits.semantic").kernel.numpy()
    report = load_deeplab_checkpoint(coco, prefix,
                                     exclude=["logits/semantic", "MobilenetV2/cls_logits"])
    assert sorted(report.excluded) == ["MobilenetV2/cls_logits/biases",
                                       "MobilenetV2/cls_logits/weights",
                                       "logits/semantic/biases", "logits/semantic/weights"]
    np.testing.assert_array_equal(coco.get_layer("logits.semantic").kernel.numpy(), fresh_logits)
    np.testing.assert_array_equal(coco.get_layer("MobilenetV2.Conv").kernel.numpy(),
                                  voc.get_layer("MobilenetV2.Conv").kernel.numpy())


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    model = build_model("mobilenet_v2", 3)
    with pytest.raises(FileNotFoundError, match="no checkpoint found in directory"):
        load_deeplab_checkpoint(model, str(tmp_path))
    with pytest.raises(FileNotFoundError, match="nope.ckpt not found"):
        load_deeplab_checkpoint(model, str(tmp_path / "nope.ckpt"))


def test_keras_applications_mobilenet_v2_weights_map_onto_our_backbone():
    source = keras.applications.MobileNetV2(weights=None, include_top=False,
                                            input_shape=(None, None, 3))
    _randomise(source, 3)
    model = build_model("mobilenet_v2", 21, output_stride=32)  # Keras's has no atrous layers
    # Stem conv + BN, first unit 2 x (conv + BN), 16 units x 3 x (conv + BN).
    assert load_keras_mobilenet_v2(model, source) == 2 + 4 + 16 * 6
    images = np.random.default_rng(4).uniform(0, 255, (1, 64, 96, 3)).astype(np.float32)
    theirs = keras.Model(source.input, source.get_layer("block_16_project_BN").output)(
        images / 127.5 - 1.0, training=False)
    ours = model(images, training=False)["endpoints"]["MobilenetV2/layer_18"]
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-3, atol=1e-3)


def test_command_line_prints_the_report(tmp_path):
    model = build_model("mobilenet_v2", 21, atrous_rates=None, decoder_output_stride=None)
    prefix = save_deeplab_checkpoint(model, str(tmp_path / "m.ckpt"))
    result = subprocess.run(
        [sys.executable, "-m", "core.checkpoints", f"--checkpoint={prefix}",
         "--model_variant=mobilenet_v2", "--decoder_output_stride=0"],
        cwd=REPO, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr
    assert "loaded 274 variables" in result.stdout
    assert "checkpoint variables not used: 0" in result.stdout
