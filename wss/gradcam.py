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
"""

from __future__ import annotations

import tensorflow as tf


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
    shift = tf.zeros([tf.shape(features)[0], 1, 1, tf.shape(features)[-1]], tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(shift)
        logits = tf.cast(head(features + shift, training=False), tf.float32)
    # [N, C-1, 1, 1, K]: the gradient summed over positions, for every class.
    summed_gradients = tape.batch_jacobian(logits, shift)[:, :, 0, 0, :]
    num_positions = tf.cast(tf.shape(features)[1] * tf.shape(features)[2], tf.float32)
    alpha = summed_gradients / num_positions
    cams = tf.nn.relu(tf.einsum("nhwk,nck->nhwc", features, alpha))
    cams *= tf.cast(image_labels, tf.float32)[:, None, None, :]
    maxima = tf.reduce_max(cams, axis=[1, 2], keepdims=True)
    cams = tf.math.divide_no_nan(cams, maxima)
    return tf.stop_gradient(cams), tf.stop_gradient(logits)


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
