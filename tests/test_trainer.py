"""The supervised trainer's step: loss goes down, gradient multipliers, weight decay,
frozen batch norm. In-process, tiny MobileNetV2."""

import keras
import numpy as np
import tensorflow as tf

from core.deeplab import build_model
from core.trainer_model import SupervisedSegmenter, freeze_batch_norm, last_layer_scopes

NUM_CLASSES = 4


def _batch(seed=0, size=33, batch=2):
    rng = np.random.default_rng(seed)
    label = np.zeros((batch, size, size, 1), np.int32)
    label[:, 8:24, 8:24] = rng.integers(1, NUM_CLASSES, size=(batch, 1, 1, 1))
    label[:, :2] = 255
    image = rng.uniform(0, 60, (batch, size, size, 3)).astype(np.float32)
    image[label[..., 0] > 0] += 150.0
    presence = np.zeros((batch, NUM_CLASSES - 1), np.float32)
    for i in range(batch):
        presence[i, label[i, 8, 8, 0] - 1] = 1
    return dict(image=image, label=label, valid_mask=np.ones_like(label, np.float32),
                class_presence=presence)


def _trainer(learning_rate=0.05, momentum=0.9, **kwargs):
    network = build_model("mobilenet_v2", NUM_CLASSES, use_dropout=False)
    trainer = SupervisedSegmenter(network, NUM_CLASSES, 255, **kwargs)
    trainer.compile(optimizer=keras.optimizers.SGD(learning_rate, momentum=momentum))
    trainer.prepare(np.zeros((1, 33, 33, 3), np.float32))
    trainer.optimizer.build(trainer.trainable_variables)
    return trainer


def test_a_few_steps_drive_the_loss_down_on_a_fixed_batch():
    trainer = _trainer(weight_decay=4e-5)
    batch = _batch()
    history = []
    for _ in range(15):
        logs = trainer.train_step(batch)
        history.append(float(logs["loss_seg"]))
        trainer.reset_metrics()
    assert np.all(np.isfinite(history))
    assert history[-1] < 0.5 * history[0], history


def test_gradient_multipliers_bias_twice_and_last_layers():
    trainer = _trainer(learning_rate=0.1, momentum=0.0, weight_decay=0.0,
                       last_layer_gradient_multiplier=10.0,
                       last_layers=last_layer_scopes(build_model("mobilenet_v2", 2), True))
    batch = _batch(1)
    before = {v.path: v.numpy() for v in trainer.trainable_variables}
    with tf.GradientTape() as tape:
        total, _, _ = trainer.compute_losses(batch)
    gradients = dict(zip([v.path for v in trainer.trainable_variables],
                         tape.gradient(total, trainer.trainable_variables)))
    trainer.train_step(batch)
    after = {v.path: v.numpy() for v in trainer.trainable_variables}
    expected_factor = {
        "logits.semantic/kernel": 10.0, "logits.semantic/bias": 20.0,
        "MobilenetV2.cls_logits/kernel": 10.0, "MobilenetV2.cls_logits/bias": 20.0,
        "aspp0/kernel": 1.0, "MobilenetV2.Conv/kernel": 1.0,
        "MobilenetV2.Conv.BatchNorm/gamma": 1.0,
    }
    for path, factor in expected_factor.items():
        step = before[path] - after[path]
        np.testing.assert_allclose(step, 0.1 * factor * gradients[path].numpy(),
                                   rtol=2e-3, atol=1e-7, err_msg=path)


def test_weight_decay_covers_conv_kernels_but_not_depthwise_bias_or_batch_norm():
    trainer = _trainer(weight_decay=1e-3)
    logs = trainer.train_step(_batch(2))
    # The tracker holds the decay computed before the update, from these kernels:
    kernels = [layer for layer in trainer.network.layers
               if isinstance(layer, keras.layers.Conv2D)
               and not isinstance(layer, keras.layers.DepthwiseConv2D)]
    assert any(layer.name == "MobilenetV2.expanded_conv.project" for layer in kernels)
    assert len(trainer.decay_kernels()) == len(kernels)
    names = {id(k) for k in trainer.decay_kernels()}
    depthwise = trainer.network.get_layer("MobilenetV2.expanded_conv.depthwise").kernel
    assert id(depthwise) not in names
    assert float(logs["weight_decay"]) > 0
    np.testing.assert_allclose(
        float(logs["loss"]),
        float(logs["loss_seg"]) + float(logs["loss_cls"]) + float(logs["weight_decay"]),
        rtol=1e-5)


def test_frozen_batch_norm_keeps_moving_statistics():
    network = build_model("mobilenet_v2", NUM_CLASSES, use_dropout=False)
    freeze_batch_norm(network)
    trainer = SupervisedSegmenter(network, NUM_CLASSES, 255)
    trainer.compile(optimizer=keras.optimizers.SGD(0.05))
    trainer.prepare(np.zeros((1, 33, 33, 3), np.float32))
    bn = network.get_layer("MobilenetV2.Conv.BatchNorm")
    mean_before = bn.moving_mean.numpy().copy()
    assert all(v is not bn.gamma for v in trainer.trainable_variables)
    trainer.train_step(_batch(3))
    np.testing.assert_array_equal(bn.moving_mean.numpy(), mean_before)
