"""Losses, metrics and the learning-rate schedule against numpy computations."""

import numpy as np
import pytest
import tensorflow as tf

from core import losses, metrics
from core.schedule import PolyWithSlowStart
from tests.numpy_reference import resize_bilinear_align_corners


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_pixel_cross_entropy_excludes_ignore_and_upsamples_with_aligned_corners():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
    labels = rng.integers(0, 5, size=(2, 9, 10, 1)).astype(np.int32)
    labels[0, :3] = 255
    total, count = losses.pixel_cross_entropy(logits, labels, 5, 255)
    up = resize_bilinear_align_corners(logits, (9, 10))
    log_p = np.log(_softmax(up))
    mask = labels[..., 0] != 255
    picked = np.take_along_axis(log_p, np.where(mask, labels[..., 0], 0)[..., None], -1)[..., 0]
    assert count.numpy() == mask.sum()
    np.testing.assert_allclose(total.numpy(), -(picked * mask).sum(), rtol=1e-5)
    np.testing.assert_allclose(losses.global_mean(total, count).numpy(),
                               -(picked * mask).sum() / mask.sum(), rtol=1e-5)


def test_pixel_cross_entropy_at_logit_resolution_resizes_labels_nearest():
    logits = np.zeros((1, 3, 3, 2), np.float32)
    logits[..., 1] = 2.0
    labels = np.zeros((1, 9, 9, 1), np.int32)
    labels[0, 4, 4] = 1  # the centre: kept by nearest (align corners) resizing to 3x3
    total, count = losses.pixel_cross_entropy(logits, labels, 2, 255, upsample=False)
    assert count.numpy() == 9
    p1 = np.exp(2) / (1 + np.exp(2))
    np.testing.assert_allclose(total.numpy(), -np.log(p1) - 8 * np.log(1 - p1), rtol=1e-5)


def test_sigmoid_loss_and_weight_decay_match_numpy():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(3, 4)).astype(np.float32)
    targets = (rng.random((3, 4)) > 0.5).astype(np.float32)
    total, count = losses.multilabel_sigmoid_cross_entropy(logits, targets)
    p = 1 / (1 + np.exp(-logits))
    expected = -(targets * np.log(p) + (1 - targets) * np.log(1 - p))
    assert count.numpy() == 12
    np.testing.assert_allclose(total.numpy(), expected.sum(), rtol=1e-5)
    kernels = [tf.constant(rng.normal(size=(3, 3))), tf.constant(rng.normal(size=(2,)))]
    np.testing.assert_allclose(
        losses.l2_weight_decay(kernels, 4e-5).numpy(),
        4e-5 * sum(0.5 * (k.numpy() ** 2).sum() for k in kernels), rtol=1e-6)


def _numpy_confusion(labels, predictions, num_classes, ignore):
    confusion = np.zeros((num_classes, num_classes))
    for l, p in zip(labels.ravel(), predictions.ravel()):
        if l != ignore:
            confusion[l, p] += 1
    return confusion


def test_miou_equals_a_numpy_confusion_matrix_computation_with_ignore_pixels():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 4, size=(3, 8, 8))
    labels[rng.random(labels.shape) < 0.2] = 255
    predictions = np.where(rng.random(labels.shape) < 0.6, labels % 4,
                           rng.integers(0, 4, labels.shape))
    confusion = _numpy_confusion(labels, predictions, 4, 255)
    tp = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - tp
    expected_miou = np.mean(tp[union > 0] / union[union > 0])

    metric = metrics.ConfusionMatrix(4, 255)
    for i in range(3):  # streaming over batches
        metric.update_state(labels[i], predictions[i])
    np.testing.assert_array_equal(metric.matrix.numpy(), confusion)
    np.testing.assert_allclose(metric.result().numpy(), expected_miou, rtol=1e-6)
    miou, iou = metrics.iou_from_confusion(confusion)
    np.testing.assert_allclose(miou, expected_miou)
    np.testing.assert_allclose(metrics.pixel_accuracy_from_confusion(confusion),
                               tp.sum() / confusion.sum())


def test_miou_skips_classes_absent_from_labels_and_predictions():
    confusion = np.array([[5, 1, 0], [2, 3, 0], [0, 0, 0]])
    miou, iou = metrics.iou_from_confusion(confusion)
    assert np.isnan(iou[2])
    np.testing.assert_allclose(miou, np.mean([5 / 8, 3 / 6]))


def test_class_balanced_accuracy_is_the_mean_of_per_class_accuracies():
    labels = np.array([0, 0, 0, 0, 1, 1, 255, 2])
    predictions = np.array([0, 0, 0, 1, 1, 0, 1, 2])
    correct, total = metrics.per_class_correct_and_total(labels, predictions, 4, 255)
    np.testing.assert_array_equal(correct.numpy(), [3, 1, 1, 0])
    np.testing.assert_array_equal(total.numpy(), [4, 2, 1, 0])
    # Class 3 has no pixels and does not count.
    np.testing.assert_allclose(metrics.class_balanced_accuracy(correct, total).numpy(),
                               np.mean([3 / 4, 1 / 2, 1]))


def test_poly_schedule_with_slow_start():
    schedule = PolyWithSlowStart(0.007, 1000, 0.9, slow_start_step=100,
                                 slow_start_learning_rate=1e-4)
    np.testing.assert_allclose(schedule(0).numpy(), 1e-4)
    np.testing.assert_allclose(schedule(99).numpy(), 1e-4)
    for step in (100, 550, 999, 1000):
        expected = 0.007 * (1 - (step - 100) / 900) ** 0.9
        np.testing.assert_allclose(schedule(step).numpy(), expected, rtol=1e-5, atol=1e-9)
    assert schedule(5000).numpy() == 0.0
    plain = PolyWithSlowStart(0.01, 30000)
    np.testing.assert_allclose(plain(15000).numpy(), 0.01 * 0.5 ** 0.9, rtol=1e-6)
    with pytest.raises(ValueError, match="must exceed slow_start_step"):
        PolyWithSlowStart(0.01, 100, slow_start_step=100)
