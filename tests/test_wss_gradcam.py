"""Grad-CAM (wss/gradcam.py) against independent computations.

References: a per-class loop of separate ``tf.GradientTape`` passes followed by
numpy float64 arithmetic written from the method document (step 2 and 3), and,
for DeepLab's global-average-pool + linear head, the closed form
ReLU(A . W_c) normalised by its spatial maximum (the 1/hw of the mean cancels).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from core.deeplab import build_model
from tests.tiny_network import TinyNet
from wss.gradcam import grad_cam, grad_cam_from_features, predicted_labels

C = 5  # classes including background; the heads predict C - 1 = 4


def make_tiny_net(seed=0, image_size=33):
    keras.utils.set_random_seed(seed)
    net = TinyNet(num_classes=C)
    net(np.zeros((1, image_size, image_size, 3), np.float32))
    rng = np.random.default_rng(seed)
    for bn in (net.bn1, net.bn2):  # non-trivial moving statistics
        bn.moving_mean.assign(rng.normal(0, 0.3, bn.moving_mean.shape).astype(np.float32))
        bn.moving_variance.assign(rng.uniform(0.3, 3.0, bn.moving_variance.shape)
                                  .astype(np.float32))
    return net


def reference_cams(head, features, labels):
    """Per-class loop of separate tapes, then numpy float64 from the equations."""
    features = tf.constant(features, tf.float32)
    a = features.numpy().astype(np.float64)
    n, h, w, _ = a.shape
    cams = np.zeros((n, h, w, labels.shape[1]))
    gradients = []
    for c in range(labels.shape[1]):
        with tf.GradientTape() as tape:
            tape.watch(features)
            logit_c = head(features, training=False)[:, c]
        g = tape.gradient(logit_c, features).numpy().astype(np.float64)  # [N, h, w, K]
        gradients.append(g)
        alpha = g.mean(axis=(1, 2))  # [N, K]
        cams[..., c] = np.maximum(np.einsum("nhwk,nk->nhw", a, alpha), 0.0)
    cams *= labels[:, None, None, :]
    maxima = cams.max(axis=(1, 2), keepdims=True)
    cams = np.where(maxima > 0, cams / np.where(maxima > 0, maxima, 1.0), 0.0)
    return cams, gradients


@pytest.fixture(scope="module")
def tiny():
    net = make_tiny_net()
    images = np.random.default_rng(1).uniform(0, 255, (3, 33, 33, 3)).astype(np.float32)
    return net, images


def test_tiny_net_is_a_real_nonlinear_head_case(tiny):
    """Guards the premise of the next test: the head's gradient varies over
    positions and classes, and the network's own cls_logits are the head applied
    to the Grad-CAM endpoint."""
    net, images = tiny
    out = net(images, training=False)
    features = out["endpoints"][net.backbone_spec.output_endpoint]
    np.testing.assert_allclose(net.classification_head(features).numpy(),
                               out["cls_logits"].numpy(), rtol=1e-6, atol=1e-6)
    _, gradients = reference_cams(net.classification_head, features.numpy(), np.ones((3, C - 1)))
    g = gradients[0]
    assert np.abs(g - g.mean(axis=(1, 2), keepdims=True)).max() > 1e-4  # position-dependent
    assert np.abs(gradients[0] - gradients[1]).max() > 1e-4


def test_nonlinear_head_equals_per_class_tapes(tiny):
    net, images = tiny
    labels = np.array([[1, 0, 1, 1], [0, 1, 1, 0], [1, 1, 1, 1]], np.float32)
    cams = grad_cam(net, images, labels).numpy()

    # Reference on the inference-mode (moving statistics) backbone map.
    features = net(images, training=False)["endpoints"]["tiny/block3"].numpy()
    expected, _ = reference_cams(net.classification_head, features, labels)
    assert cams.shape == (3, 5, 5, C - 1)
    np.testing.assert_allclose(cams, expected, rtol=1e-4, atol=1e-5)
    # The case is not degenerate: some maps are non-zero with a ReLU-cut part,
    # masked classes are zero, and each kept non-zero map peaks at exactly 1.
    kept = expected.max(axis=(1, 2)) > 0
    assert kept.sum() >= 4
    for n in range(3):
        for c in range(C - 1):
            if labels[n, c] == 0:
                assert np.all(cams[n, ..., c] == 0)
            elif kept[n, c]:
                assert cams[n, ..., c].max() == pytest.approx(1.0, abs=1e-6)
    # Inference mode matters here (non-trivial moving statistics): a training-mode
    # backbone would give a different map.
    train_features = net(images, training=True)["endpoints"]["tiny/block3"].numpy()
    other, _ = reference_cams(net.classification_head, train_features, labels)
    assert np.abs(other - expected).max() > 1e-3


def test_predictions_select_classes_when_labels_are_none(tiny):
    net, images = tiny
    head = net.classification_head
    bias = head.out.bias.numpy()
    try:
        # Classes 0 and 2 predicted present (sigmoid >= 0.5), 1 and 3 absent.
        head.out.bias.assign(bias + np.array([30.0, -30.0, 30.0, -30.0], np.float32))
        cls_logits = net(images, training=False)["cls_logits"].numpy()
        predicted = (1.0 / (1.0 + np.exp(-cls_logits.astype(np.float64))) >= 0.5)
        np.testing.assert_array_equal(predicted, np.tile([[1, 0, 1, 0]], (3, 1)).astype(bool))
        np.testing.assert_array_equal(predicted_labels(cls_logits).numpy(),
                                      predicted.astype(np.float32))
        cams = grad_cam(net, images).numpy()
        features = net(images, training=False)["endpoints"]["tiny/block3"].numpy()
        expected, _ = reference_cams(head, features, predicted.astype(np.float64))
        np.testing.assert_allclose(cams, expected, rtol=1e-4, atol=1e-5)
        assert np.all(cams[..., 1] == 0) and np.all(cams[..., 3] == 0)
        assert cams[..., 0].max() > 0 or cams[..., 2].max() > 0
    finally:
        head.out.bias.assign(bias)


def test_predicted_labels_threshold_is_inclusive():
    logits = np.array([[0.0, -1e-3, 1e-3, -20.0, 20.0]], np.float32)
    np.testing.assert_array_equal(predicted_labels(logits).numpy(), [[1, 0, 1, 0, 1]])


@pytest.fixture(scope="module")
def deeplab():
    keras.utils.set_random_seed(3)
    model = build_model("mobilenet_v2", C)
    images = np.random.default_rng(4).uniform(0, 255, (2, 49, 49, 3)).astype(np.float32)
    model(images[:1], training=False)
    # Give the linear head a bias and random weights of a useful size.
    rng = np.random.default_rng(5)
    conv = model.classification_head.conv
    conv.kernel.assign(rng.normal(0, 0.3, conv.kernel.shape).astype(np.float32))
    conv.bias.assign(rng.normal(0, 1.0, conv.bias.shape).astype(np.float32))
    return model, images


def test_deeplab_linear_head_closed_form(deeplab):
    model, images = deeplab
    labels = np.array([[1, 1, 0, 1], [1, 1, 1, 1]], np.float32)
    cams = grad_cam(model, images, labels).numpy()

    a = model(images, training=False)["endpoints"][model.backbone_spec.output_endpoint]
    a = a.numpy().astype(np.float64)
    w = model.classification_head.conv.kernel.numpy().astype(np.float64)[0, 0]  # [K, C-1]
    expected = np.maximum(np.einsum("nhwk,kc->nhwc", a, w), 0.0) * labels[:, None, None, :]
    maxima = expected.max(axis=(1, 2), keepdims=True)
    expected = np.where(maxima > 0, expected / np.where(maxima > 0, maxima, 1.0), 0.0)
    assert cams.shape == (2, 4, 4, C - 1)  # stride 16 on 49x49
    assert (expected.max(axis=(1, 2)) > 0).sum() >= 4
    assert ((expected > 0) & (expected < 1)).any()
    np.testing.assert_allclose(cams, expected, rtol=1e-4, atol=1e-5)


def test_deeplab_predicted_classes(deeplab):
    model, images = deeplab
    out = model(images, training=False)
    logits = out["cls_logits"].numpy().astype(np.float64)
    present = (1.0 / (1.0 + np.exp(-logits)) >= 0.5).astype(np.float64)
    assert 0 < present.sum() < present.size  # a mix of present and absent classes
    a = out["endpoints"][model.backbone_spec.output_endpoint].numpy().astype(np.float64)
    w = model.classification_head.conv.kernel.numpy().astype(np.float64)[0, 0]
    expected = np.maximum(np.einsum("nhwk,kc->nhwc", a, w), 0.0) * present[:, None, None, :]
    maxima = expected.max(axis=(1, 2), keepdims=True)
    expected = np.where(maxima > 0, expected / np.where(maxima > 0, maxima, 1.0), 0.0)
    np.testing.assert_allclose(grad_cam(model, images).numpy(), expected, rtol=1e-4, atol=1e-5)


def test_all_zero_maps_stay_zero_without_nan(tiny):
    net, images = tiny
    head = net.classification_head
    # No class present.
    cams = grad_cam(net, images, np.zeros((3, C - 1), np.float32)).numpy()
    assert np.all(cams == 0) and np.isfinite(cams).all()
    # Classes present but the map is zero everywhere (zero features; and
    # features whose weighted sum is negative everywhere, cut by the ReLU).
    zeros = np.zeros((2, 5, 5, 16), np.float32)
    cams, _ = grad_cam_from_features(head, zeros, np.ones((2, C - 1), np.float32))
    assert np.all(cams.numpy() == 0) and np.isfinite(cams.numpy()).all()



def test_relu_cut_map_is_zero_without_nan(deeplab):
    """A present class whose weighted sum is negative everywhere: 0, not NaN."""
    model, _ = deeplab
    w = model.classification_head.conv.kernel.numpy()[0, 0]  # [K, C-1]
    features = np.tile(-np.sign(w[:, 0])[None, None, None, :], (1, 3, 3, 1)).astype(np.float32)
    features[0, 1, 1] *= 2.0  # not constant
    cams, _ = grad_cam_from_features(model.classification_head, features,
                                     np.ones((1, C - 1), np.float32))
    cams = cams.numpy()
    assert np.isfinite(cams).all()
    assert np.all(cams[..., 0] == 0)
    assert cams[..., 1:].max() == pytest.approx(1.0)  # other classes still normalised


def test_no_gradient_out_of_the_cam(tiny):
    net, images = tiny
    images = tf.constant(images)
    features = tf.constant(net(images, training=False)["endpoints"]["tiny/block3"])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(images)
        tape.watch(features)
        from_images = tf.reduce_sum(grad_cam(net, images, np.ones((3, C - 1), np.float32)) ** 2)
        cams, logits = grad_cam_from_features(net.classification_head, features,
                                              np.ones((3, C - 1), np.float32))
        from_features = tf.reduce_sum(cams ** 2) + tf.reduce_sum(logits)
    assert float(from_images) > 0 and float(from_features) > 0
    for target, sources in ((from_images, [images] + net.trainable_variables),
                            (from_features, [features] + net.trainable_variables)):
        for g in tape.gradient(target, sources):
            assert g is None or not np.any(g.numpy() if not hasattr(g, "values")
                                           else g.values.numpy())
