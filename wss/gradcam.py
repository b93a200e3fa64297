"""Grad-CAM (Selvaraju et al. 2017) from PseudoSeg's classification head.

For each foreground class c and the last backbone feature map A (``[N, h, w, K]``)::

    alpha_ck = (1 / hw) sum_ij  d y_c / d A_ijk          (spatial mean of the gradient)
    CAM_c    = ReLU( sum_k alpha_ck A_k )
    CAM_c   *= present_c                                   (image-level labels, or
                                                            sigmoid(y_c) >= 0.5)
    CAM_c   /= max_ij CAM_c          (0 where the maximum is 0)

All C - 1 classes come from one vectorised Jacobian, not a loop of backward
passes: since ``sum_ij dy_c/dA_ijk = dy_c/d delta_k`` for a shift ``delta``
added to every position of A, the Jacobian of the logits with respect to a
``[N, K]`` shift gives every ``alpha`` at once (exact for any head). The CAM
carries no gradient.

The reference implementation's labeled-batch Grad-CAM (the SGC's training
input) differs in two ways, which ``wss.pseudoseg`` reproduces with
``labeled_cam_head="training"``: the head runs in training mode (Xception's
dropout 0.5 active, one mask shared with L_x), and ``reduce_mean`` over its
list of gradients averages the weights over the batch, ``alpha_ck = mean_n
alpha_nck`` (equal to the reference's for heads whose gradient is uniform
over positions, as DeepLab's global-mean heads are).
"""

from __future__ import annotations

import tensorflow as tf


def channel_weights(head, features, training=False):
    """Grad-CAM's channel weights of every class and the head's logits.

    Returns ``(alpha, logits)``: ``alpha`` ``[N, C-1, K]`` with
    ``alpha_nck = (1 / hw) sum_ij d y_nc / d A_nijk`` (one batched Jacobian
    with respect to a per-image shift of A), and ``logits`` ``[N, C-1]`` from
    the same call of ``head`` (so with ``training=True`` both see one dropout
    mask). Gradients of ``logits`` flow into ``features`` and the head as
    usual; ``alpha`` is meant to be used without gradient.
    """
    features = tf.cast(features, tf.float32)
    shift = tf.zeros([tf.shape(features)[0], 1, 1, tf.shape(features)[-1]], tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(shift)
        logits = tf.cast(head(features + shift, training=training), tf.float32)
    # [N, C-1, 1, 1, K]: the gradient summed over positions, for every class.
    summed_gradients = tape.batch_jacobian(logits, shift)[:, :, 0, 0, :]
    num_positions = tf.cast(tf.shape(features)[1] * tf.shape(features)[2], tf.float32)
    return summed_gradients / num_positions, logits


def cams_from_weights(features, alpha, image_labels):
    """``ReLU(sum_k alpha_ck A_k)`` masked by ``image_labels`` and normalised by
    each map's maximum (0 where it is 0); ``alpha`` ``[N or 1, C-1, K]``. No gradient."""
    features = tf.stop_gradient(tf.cast(features, tf.float32))
    alpha = tf.stop_gradient(tf.broadcast_to(
        alpha, [tf.shape(features)[0], tf.shape(alpha)[1], tf.shape(alpha)[2]]))
    cams = tf.nn.relu(tf.einsum("nhwk,nck->nhwc", features, alpha))
    cams *= tf.cast(image_labels, tf.float32)[:, None, None, :]
    maxima = tf.reduce_max(cams, axis=[1, 2], keepdims=True)
    return tf.stop_gradient(tf.math.divide_no_nan(cams, maxima))


def grad_cam_from_features(head, features, image_labels):
    """Normalised Grad-CAMs ``[N, h, w, C-1]`` of ``head`` on ``features``.

    Args:
      head: callable ``(features, training) -> [N, C-1]`` classification logits.
      features: the map Grad-CAM explains, ``[N, h, w, K]``.
      image_labels: ``[N, C-1]`` multi-hot of the classes to keep.

    Returns ``(cams, logits)``, both without gradient; ``logits`` is the head
    evaluated in inference mode.
    """
    features = tf.stop_gradient(tf.cast(features, tf.float32))
    alpha, logits = channel_weights(head, features, training=False)
    return cams_from_weights(features, alpha, image_labels), tf.stop_gradient(logits)


def predicted_labels(cls_logits, threshold=0.5):
    """The classifier's own image-level labels: ``sigmoid(y) >= threshold``."""
    return tf.cast(tf.sigmoid(tf.cast(cls_logits, tf.float32)) >= threshold, tf.float32)


def grad_cam(model, images, image_labels=None):
    """Normalised Grad-CAMs ``[N, h, w, C-1]`` at the last backbone map's resolution.

    Runs ``model`` with the backbone in inference mode (moving batch-norm
    statistics). ``model`` returns ``{"cls_logits", "endpoints"}`` and exposes
    ``backbone_spec.output_endpoint`` and ``classification_head``. Without
    ``image_labels`` the classifier's own predictions (sigmoid >= 0.5) select
    the classes.
    """
    outputs = model(images, training=False)
    features = outputs["endpoints"][model.backbone_spec.output_endpoint]
    if image_labels is None:
        image_labels = predicted_labels(outputs["cls_logits"])
    cams, _ = grad_cam_from_features(model.classification_head, features, image_labels)
    return cams
