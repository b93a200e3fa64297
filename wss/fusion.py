"""Pseudo labels from the weak view: PseudoSeg's calibrated fusion and the
other sources the ablations need.

Calibrated fusion of decoder logits p and SGC logits m (resized bilinearly,
aligned corners, to p's size)::

    s  = 1 / sqrt( mean([p ; m]^2) + 1e-8 )       one scalar over both tensors and the
                                                   whole (global) batch   (logit_norm)
    y  = gamma softmax(s p) + (1 - gamma) softmax(s m)
    y  = Sharpen(y, T),   Sharpen(a, T)_c = a_c^(1/T) / sum_j a_j^(1/T)

with gamma = 0.5 and T = 0.5. Everything is float32 and without gradient.
"""

from __future__ import annotations

import tensorflow as tf

from core.layers import resize_bilinear_align_corners
from core.losses import cross_replica_sum

PSEUDO_SOURCES = ("avg", "att", "decoder")


def sharpen(probabilities, temperature):
    """``a^(1/T) / sum a^(1/T)`` over the last axis; identity for T = 1."""
    if temperature == 1.0:
        return probabilities
    powered = tf.pow(probabilities, 1.0 / temperature)
    return powered / tf.reduce_sum(powered, axis=-1, keepdims=True)


def logit_scale(*logits):
    """``1 / sqrt(mean of squares + 1e-8)`` over all of ``logits`` and all replicas."""
    squares = tf.add_n([tf.reduce_sum(tf.square(x)) for x in logits])
    count = tf.add_n([tf.cast(tf.size(x), tf.float32) for x in logits])
    totals = cross_replica_sum(tf.stack([squares, count]))
    return tf.math.rsqrt(totals[0] / totals[1] + 1e-8)


def resize_to(logits, reference):
    return resize_bilinear_align_corners(tf.cast(logits, tf.float32), tf.shape(reference)[1:3])


def calibrated_fusion(decoder_logits, sgc_logits, gamma=0.5, temperature=0.5, logit_norm=True):
    """The fused, sharpened pseudo-label distribution ``[N, H, W, C]`` (H, W: decoder's)."""
    p = tf.stop_gradient(tf.cast(decoder_logits, tf.float32))
    m = tf.stop_gradient(resize_to(sgc_logits, p))
    if logit_norm:
        scale = logit_scale(p, m)
        p, m = p * scale, m * scale
    fused = gamma * tf.nn.softmax(p, axis=-1) + (1.0 - gamma) * tf.nn.softmax(m, axis=-1)
    return sharpen(fused, temperature)


def decoder_pseudo_label(decoder_logits, temperature=0.5):
    """Decoder only: ``Sharpen(softmax(p), T)``."""
    p = tf.stop_gradient(tf.cast(decoder_logits, tf.float32))
    return sharpen(tf.nn.softmax(p, axis=-1), temperature)


def sgc_pseudo_label(sgc_logits, decoder_logits, temperature=0.5):
    """SGC only (the reference's ``att``): ``Sharpen(softmax(resize(m)), T)``."""
    m = tf.stop_gradient(resize_to(sgc_logits, decoder_logits))
    return sharpen(tf.nn.softmax(m, axis=-1), temperature)


def pseudo_label(source, decoder_logits, sgc_logits=None, *, gamma=0.5, temperature=0.5,
                 logit_norm=True):
    """The pseudo-label distribution of ``source`` (``avg``, ``att`` or ``decoder``)."""
    if source == "decoder":
        return decoder_pseudo_label(decoder_logits, temperature)
    if sgc_logits is None:
        raise ValueError(f"pseudo source {source!r} needs SGC logits (use_attention)")
    if source == "att":
        return sgc_pseudo_label(sgc_logits, decoder_logits, temperature)
    if source == "avg":
        return calibrated_fusion(decoder_logits, sgc_logits, gamma, temperature, logit_norm)
    raise ValueError(f"pseudo source must be one of {PSEUDO_SOURCES}, got {source!r}")


def hard_pseudo_label(probabilities):
    """One-hot of the argmax: hard pseudo labels as a distribution."""
    depth = tf.shape(probabilities)[-1]
    return tf.one_hot(tf.argmax(probabilities, axis=-1), depth, dtype=tf.float32)


def confidence_mask(probabilities, threshold):
    """``[N, H, W, 1]``: 1 where the pseudo label's max probability >= threshold
    (all ones when the threshold is 0, the default)."""
    confidence = tf.reduce_max(probabilities, axis=-1, keepdims=True)
    return tf.cast(confidence >= threshold, tf.float32)
