"""core.layers.DeepLabBatchNorm against numpy and against Keras's BatchNormalization:
TF-slim's fused batch norm (biased variance to normalise, unbiased variance in the
moving average) and DeepLab's fine_tune_batch_norm=False."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from core.layers import DeepLabBatchNorm

CHANNELS = 6


def _inputs(seed=0, shape=(2, 5, 4, CHANNELS)):
    return np.random.default_rng(seed).normal(2.0, 3.0, shape).astype(np.float32)


def _layer(cls=DeepLabBatchNorm, momentum=0.9, epsilon=1e-3, **kwargs):
    layer = cls(momentum=momentum, epsilon=epsilon, **kwargs)
    layer.build((None, None, None, CHANNELS))
    layer.gamma.assign(np.linspace(0.5, 2.0, CHANNELS).astype(np.float32))
    layer.beta.assign(np.linspace(-1.0, 1.0, CHANNELS).astype(np.float32))
    layer.moving_mean.assign(np.full(CHANNELS, 1.5, np.float32))
    layer.moving_variance.assign(np.full(CHANNELS, 4.0, np.float32))
    return layer


def _normalise(x, mean, variance, layer):
    return (layer.gamma.numpy() * (x - mean) / np.sqrt(variance + layer.epsilon)
            + layer.beta.numpy())


def test_training_mode_normalises_with_batch_moments_and_averages_the_unbiased_variance():
    x = _inputs()
    layer = _layer()
    y = layer(x, training=True).numpy()
    mean, variance = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
    np.testing.assert_allclose(y, _normalise(x, mean, variance, layer), rtol=1e-5, atol=1e-5)
    n = x.shape[0] * x.shape[1] * x.shape[2]
    np.testing.assert_allclose(layer.moving_mean.numpy(), 0.9 * 1.5 + 0.1 * mean, rtol=1e-6)
    np.testing.assert_allclose(layer.moving_variance.numpy(),
                               0.9 * 4.0 + 0.1 * variance * n / (n - 1), rtol=1e-5)


def test_inference_mode_normalises_with_the_moving_statistics():
    x = _inputs(1)
    layer = _layer()
    np.testing.assert_allclose(layer(x, training=False).numpy(),
                               _normalise(x, 1.5, 4.0, layer), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(layer.moving_mean.numpy(), np.full(CHANNELS, 1.5))


def test_moving_statistics_switch_normalises_with_them_in_training_and_never_updates():
    x = _inputs(2)
    layer = _layer(use_moving_statistics=True)
    np.testing.assert_allclose(layer(x, training=True).numpy(),
                               _normalise(x, 1.5, 4.0, layer), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(layer.moving_mean.numpy(), np.full(CHANNELS, 1.5))
    np.testing.assert_array_equal(layer.moving_variance.numpy(), np.full(CHANNELS, 4.0))


@pytest.mark.parametrize("frozen", [False, True])
def test_gradients_equal_keras_batch_normalization(frozen):
    """The fused kernel's gradients (x, gamma, beta) against Keras's unfused ops."""
    x = tf.constant(_inputs(3))
    weights = tf.constant(_inputs(4) / 3.0)
    ours = _layer(use_moving_statistics=frozen)
    keras_layer = _layer(keras.layers.BatchNormalization)
    gradients = []
    for layer, training in ((ours, True), (keras_layer, not frozen)):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x, training=training) * weights)
        gradients.append(tape.gradient(loss, [x, layer.gamma, layer.beta]))
    for name, a, b in zip(("x", "gamma", "beta"), *gradients):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-4, err_msg=name)


def test_bfloat16_compute_dtype_is_kept_and_computed_in_float32():
    x = _inputs(5)
    layer = DeepLabBatchNorm(momentum=0.9, epsilon=1e-3, dtype="mixed_bfloat16")
    y = layer(tf.cast(x, tf.bfloat16), training=True)
    assert y.dtype == tf.bfloat16
    assert layer.moving_mean.dtype == "float32"
    reference = (x - x.mean(axis=(0, 1, 2))) / np.sqrt(x.var(axis=(0, 1, 2)) + 1e-3)
    # bfloat16 keeps 8 significant bits: relative error about 2^-8 of the input and output.
    np.testing.assert_allclose(tf.cast(y, tf.float32).numpy(), reference, atol=0.05)


def test_a_mask_takes_keras_implementation_with_the_same_normalisation():
    x = _inputs(6)
    layer = _layer()
    mask = np.ones(x.shape[:-1], bool)
    np.testing.assert_allclose(layer(x, training=False, mask=mask).numpy(),
                               _normalise(x, 1.5, 4.0, layer), rtol=1e-5, atol=1e-5)


def test_reestimated_moving_statistics_are_the_average_of_the_batch_statistics():
    """benchmarks/bn_recalibration.py: K training-mode passes replace the moving
    statistics by the plain mean of the K batch means and unbiased variances,
    whatever they were before, and leave the layer's decay as it was."""
    from benchmarks.bn_recalibration import reestimate_moving_statistics

    inputs = keras.Input((None, None, CHANNELS))
    layer = _layer(momentum=0.99)
    network = keras.Model(inputs, layer(inputs))
    batches = [_inputs(seed) for seed in range(4)]
    dataset = tf.data.Dataset.from_tensor_slices({"image": np.stack(batches)})
    assert reestimate_moving_statistics(network, dataset, batches=3) == 1
    used = batches[:3]
    n = np.prod(used[0].shape[:3])
    np.testing.assert_allclose(layer.moving_mean.numpy(),
                               np.mean([x.mean(axis=(0, 1, 2)) for x in used], axis=0),
                               rtol=1e-5)
    np.testing.assert_allclose(layer.moving_variance.numpy(),
                               np.mean([x.var(axis=(0, 1, 2)) * n / (n - 1) for x in used],
                                       axis=0), rtol=1e-5)
    assert layer.momentum == 0.99


def test_reestimation_refuses_a_plain_keras_batch_norm_rather_than_skip_it():
    from benchmarks.bn_recalibration import reestimate_moving_statistics

    inputs = keras.Input((None, None, CHANNELS))
    network = keras.Model(inputs, keras.layers.BatchNormalization(name="plain_bn")(inputs))
    dataset = tf.data.Dataset.from_tensor_slices({"image": _inputs()[None]})
    with pytest.raises(TypeError, match="reestimate_moving_statistics: layer 'plain_bn'"):
        reestimate_moving_statistics(network, dataset, batches=1)
