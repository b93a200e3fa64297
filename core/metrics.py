"""Segmentation metrics: streaming confusion matrix, mIoU, pixel accuracies.

    IoU_c = TP_c / (TP_c + FP_c + FN_c)       mIoU = mean of IoU_c over classes
                                              that occur in labels or predictions
    pixel accuracy = sum_c TP_c / #valid pixels
    class-balanced accuracy = mean over classes present in the labels of TP_c / #pixels_c

Pixels whose label is the ignore label (or outside [0, C)) are excluded.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


def confusion_counts(labels, predictions, num_classes, ignore_label):
    """``[C, C]`` float32 counts, rows = label, columns = prediction.

    Static shapes only (a segment sum with an overflow bucket for ignored
    pixels), so it runs under XLA.
    """
    labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
    predictions = tf.reshape(tf.cast(predictions, tf.int32), [-1])
    valid = tf.logical_and(tf.not_equal(labels, ignore_label),
                           tf.logical_and(labels >= 0, labels < num_classes))
    cells = num_classes * num_classes
    index = tf.where(valid, labels * num_classes + predictions, cells)
    counts = tf.math.unsorted_segment_sum(tf.ones_like(index, tf.float32), index, cells + 1)
    return tf.reshape(counts[:cells], [num_classes, num_classes])


def iou_from_confusion(confusion: np.ndarray) -> tuple[float, np.ndarray]:
    """(mIoU, per-class IoU) from a confusion matrix; absent classes get NaN IoU."""
    confusion = np.asarray(confusion, np.float64)
    tp = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
    miou = float(np.nanmean(iou)) if np.any(union > 0) else 0.0
    return miou, iou


def pixel_accuracy_from_confusion(confusion: np.ndarray) -> float:
    confusion = np.asarray(confusion, np.float64)
    total = confusion.sum()
    return float(np.trace(confusion) / total) if total else 0.0


class ConfusionMatrix(keras.metrics.Metric):
    """Streaming confusion matrix over a whole split; ``result()`` is the mIoU."""

    def __init__(self, num_classes, ignore_label, name="confusion_matrix", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = num_classes
        self.ignore_label = ignore_label
        self.matrix = self.add_variable(shape=(num_classes, num_classes),
                                        initializer="zeros", name="matrix")

    def update_state(self, labels, predictions, sample_weight=None):
        del sample_weight
        self.matrix.assign_add(confusion_counts(labels, predictions, self.num_classes,
                                                self.ignore_label))

    def result(self):
        matrix = tf.convert_to_tensor(self.matrix)
        tp = tf.linalg.diag_part(matrix)
        union = tf.reduce_sum(matrix, 0) + tf.reduce_sum(matrix, 1) - tp
        present = tf.cast(union > 0, tf.float32)
        iou = tf.math.divide_no_nan(tp, union)
        return tf.math.divide_no_nan(tf.reduce_sum(iou * present), tf.reduce_sum(present))

    def reset_state(self):
        self.matrix.assign(tf.zeros_like(self.matrix))


def per_class_correct_and_total(labels, predictions, num_classes, ignore_label):
    """Per-class (correct, total) pixel counts, each ``[C]`` float32."""
    confusion = confusion_counts(labels, predictions, num_classes, ignore_label)
    return tf.linalg.diag_part(confusion), tf.reduce_sum(confusion, axis=1)


def class_balanced_accuracy(correct, total):
    """Mean over classes with pixels of correct_c / total_c (0 if no class has pixels)."""
    present = tf.cast(total > 0, tf.float32)
    return tf.math.divide_no_nan(tf.reduce_sum(tf.math.divide_no_nan(correct, total) * present),
                                 tf.reduce_sum(present))
