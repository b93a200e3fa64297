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


def test_frozen_batch_norm_uses_moving_statistics_and_trains_gamma_and_beta():
    """DeepLab's fine_tune_batch_norm=False: moving statistics in training mode,
    never updated; gamma and beta still trained (slim's batch norm variables
    are trainable whatever is_training)."""
    network = build_model("mobilenet_v2", NUM_CLASSES, use_dropout=False)
    freeze_batch_norm(network)
    trainer = SupervisedSegmenter(network, NUM_CLASSES, 255)
    trainer.compile(optimizer=keras.optimizers.SGD(0.05))
    trainer.prepare(np.zeros((1, 33, 33, 3), np.float32))
    bn = network.get_layer("MobilenetV2.Conv.BatchNorm")
    rng = np.random.default_rng(3)
    bn.moving_mean.assign(rng.normal(size=bn.moving_mean.shape).astype(np.float32))
    bn.moving_variance.assign(rng.uniform(0.5, 2, bn.moving_variance.shape).astype(np.float32))
    mean_before = bn.moving_mean.numpy().copy()
    variance_before = bn.moving_variance.numpy().copy()
    norms = [layer for layer in network._flatten_layers(include_self=False)
             if isinstance(layer, keras.layers.BatchNormalization)]
    gammas_before = [layer.gamma.numpy().copy() for layer in norms]
    assert any(v is bn.gamma for v in trainer.trainable_variables)
    assert any(v is bn.beta for v in trainer.trainable_variables)

    x = rng.normal(size=(2, 5, 5, bn.gamma.shape[0])).astype(np.float32)
    expected = (bn.gamma.numpy() * (x - mean_before) / np.sqrt(variance_before + bn.epsilon)
                + bn.beta.numpy())
    np.testing.assert_allclose(bn(x, training=True).numpy(), expected, rtol=1e-4, atol=1e-4)

    for step in range(3):  # the first step only moves the logits (the network starts at 0)
        trainer.train_step(_batch(step))
    np.testing.assert_array_equal(bn.moving_mean.numpy(), mean_before)
    np.testing.assert_array_equal(bn.moving_variance.numpy(), variance_before)
    changed = [np.abs(layer.gamma.numpy() - before).max() > 0
               for layer, before in zip(norms, gammas_before)]
    # Updates below float32 resolution at gamma = 1 leave many gammas equal; a frozen
    # gamma (Keras trainable=False) would leave all of them equal.
    assert sum(changed) >= 10, f"gamma changed in {sum(changed)} of {len(norms)} layers"


def test_freeze_batch_norm_refuses_a_plain_keras_batch_norm():
    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, keras.layers.BatchNormalization(name="plain_bn")(inputs))
    try:
        freeze_batch_norm(model)
    except TypeError as error:
        assert "plain_bn" in str(error)
    else:
        raise AssertionError("freeze_batch_norm accepted a plain BatchNormalization")
