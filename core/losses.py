"""Segmentation losses, written so that they are exact under data parallelism.

Every loss is a *sum* over this replica's pixels (or entries) divided by a
*global* count, the count summed over all replicas. Gradients are summed
across replicas by the optimizer, so one step on R replicas with a global
batch B equals one step on one replica with batch B. On one replica the
formulas reduce to plain means.
"""

from __future__ import annotations

import tensorflow as tf

from core.layers import resize_bilinear_align_corners


def cross_replica_sum(value):
    """Sum of ``value`` over the replicas in sync (``value`` itself outside a strategy)."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value
    return context.all_reduce(tf.distribute.ReduceOp.SUM, value)


def num_replicas():
    context = tf.distribute.get_replica_context()
    return 1 if context is None else context.num_replicas_in_sync


def global_mean(local_sum, local_count):
    """``local_sum / sum_r local_count_r``, 0 where nothing counts anywhere."""
    total = cross_replica_sum(tf.stop_gradient(tf.cast(local_count, tf.float32)))
    return tf.math.divide_no_nan(tf.cast(local_sum, tf.float32), total)


def pixel_cross_entropy(logits, labels, num_classes, ignore_label, upsample=True):
    """Softmax cross-entropy per pixel, ignore label excluded (DeepLab's L_s).

        L = sum_{p valid} -log softmax(z_p)[y_p] / #valid

    Args:
      logits: ``[N, h, w, C]``.
      labels: ``[N, H, W, 1]`` int class values.
      upsample: resize the logits bilinearly (align corners) to the labels'
        size (DeepLab's ``upsample_logits``); otherwise the labels are resized
        nearest to the logits' size.

    Returns ``(sum, count)`` over this replica; see ``global_mean``.
    """
    logits = tf.cast(logits, tf.float32)
    labels = tf.cast(labels, tf.int32)
    if upsample:
        logits = resize_bilinear_align_corners(logits, tf.shape(labels)[1:3])
    else:
        labels = tf.raw_ops.ResizeNearestNeighbor(images=labels, size=tf.shape(logits)[1:3],
                                                  align_corners=True, half_pixel_centers=False)
    labels = labels[..., 0]
    valid = tf.logical_and(tf.not_equal(labels, ignore_label),
                           tf.logical_and(labels >= 0, labels < num_classes))
    safe_labels = tf.where(valid, labels, tf.zeros_like(labels))
    per_pixel = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=safe_labels, logits=logits)
    valid = tf.cast(valid, tf.float32)
    return tf.reduce_sum(per_pixel * valid), tf.reduce_sum(valid)


def multilabel_sigmoid_cross_entropy(logits, targets):
    """Mean sigmoid cross-entropy over all (image, class) entries (PseudoSeg's L_x).

    Returns ``(sum, count)`` over this replica.
    """
    logits = tf.cast(logits, tf.float32)
    targets = tf.cast(targets, tf.float32)
    per_entry = tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits)
    return tf.reduce_sum(per_entry), tf.cast(tf.size(per_entry), tf.float32)


def l2_weight_decay(kernels, weight_decay):
    """slim's ``l2_regularizer``: ``weight_decay * sum_w ||w||^2 / 2``, in float32."""
    if not kernels or not weight_decay:
        return tf.constant(0.0)
    return weight_decay * tf.add_n([tf.nn.l2_loss(tf.cast(k, tf.float32)) for k in kernels])

