"""Self-attention Grad-CAM (SGC), PseudoSeg's refinement of Grad-CAM.

With the hypercolumn H (the two deepest backbone maps, resized bilinearly
with aligned corners to the CAM's size, concatenated, no gradient into the
backbone), the normalised CAM (``[N, h, w, C-1]``, no gradient) and the valid
mask v (1 on real pixels, resized nearest to the CAM's size)::

    k_j = W_k H_j,  q_i = W_q H_i                       (1x1 convs, no bias, d = 128)
    s_ij = q_i . k_j / sqrt(d) - 1e9 (1 - v_i v_j)      (float32)
    a_ij = softmax_j(s_ij)
    m_i  = CAM_i + sum_j a_ij CAM_j                     (skip connection)
    m_i  = [2 - max_c m_i,c ; m_i]                      (background channel prepended)
    SGC  = BN( W_c m )                                  (1x1 conv to C, no bias, batch norm)

The mask is the reference implementation's (``compute_self_att_v2``): it
masks queries as well as keys. A valid query attends to valid keys only; a
padded query has every logit lowered by 1e9, which float32 rounds to -1e9
for |q.k/sqrt(d)| < 32, so it attends uniformly to all positions. The mask
is resized with ``resize_nearest_floor`` (TF1's default nearest resize, as
the reference).

The layer's weights are trained only through L_sa on the labeled batch.
Sublayer names follow the reference's variable scopes (``hyper_column/key``,
``hyper_column/query``, ``pixel_normalization``).
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from core.layers import resize_bilinear_align_corners, resize_nearest_floor

MASKED_LOGIT = -1e9


class SelfAttentionGradCAM(keras.layers.Layer):
    """C-class SGC logits from hypercolumn features and a normalised CAM."""

    def __init__(self, num_classes: int, attention_dim: int = 128,
                 batch_norm_decay: float = 0.999, synchronized: bool = False, **kwargs):
        kwargs.setdefault("dtype", "float32")  # attention and softmax in float32
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.attention_dim = attention_dim
        self.key = keras.layers.Conv2D(attention_dim, 1, use_bias=False,
                                       name="hyper_column.key", dtype=self.dtype_policy)
        self.query = keras.layers.Conv2D(attention_dim, 1, use_bias=False,
                                         name="hyper_column.query", dtype=self.dtype_policy)
        self.classifier = keras.layers.Conv2D(num_classes, 1, use_bias=False,
                                              name="pixel_normalization",
                                              dtype=self.dtype_policy)
        # slim.batch_norm's defaults in the reference: no scale, decay 0.999, eps 1e-3.
        self.norm = keras.layers.BatchNormalization(momentum=batch_norm_decay, epsilon=1e-3,
                                                    scale=False, synchronized=synchronized,
                                                    name="pixel_normalization.BatchNorm",
                                                    dtype=self.dtype_policy)

    def build(self, features_shape, cam_shape=None, valid_mask_shape=None):
        """``features_shape``: the hypercolumn maps' shapes (Keras's
        ``<call argument>_shape`` convention, so a fresh layer builds itself
        when called)."""
        channels = sum(int(shape[-1]) for shape in features_shape)
        hypercolumn = (None, None, None, channels)
        self.key.build(hypercolumn)
        self.query.build(hypercolumn)
        self.classifier.build((None, None, None, self.num_classes))
        self.norm.build((None, None, None, self.num_classes))
        self.built = True

    def hypercolumn(self, features, size):
        return tf.concat(
            [resize_bilinear_align_corners(tf.stop_gradient(tf.cast(f, tf.float32)), size)
             for f in features], axis=-1)

    def attention(self, hypercolumn, valid_mask=None):
        """Attention weights ``[N, hw, hw]`` (rows: queries i, columns: keys j)."""
        batch = tf.shape(hypercolumn)[0]
        keys = tf.reshape(self.key(hypercolumn), [batch, -1, self.attention_dim])
        queries = tf.reshape(self.query(hypercolumn), [batch, -1, self.attention_dim])
        logits = tf.matmul(queries, keys, transpose_b=True) / math.sqrt(self.attention_dim)
        if valid_mask is not None:
            valid = tf.reshape(tf.cast(valid_mask, tf.float32), [batch, -1, 1])
            both_valid = tf.matmul(valid, valid, transpose_b=True)  # v_i v_j
            logits += (1.0 - both_valid) * MASKED_LOGIT
        return tf.nn.softmax(logits, axis=-1)

    def call(self, features, cam, valid_mask=None, training=False):
        cam = tf.stop_gradient(tf.cast(cam, tf.float32))
        size = tf.shape(cam)[1:3]
        hypercolumn = self.hypercolumn(features, size)
        if valid_mask is not None:
            valid_mask = resize_nearest_floor(tf.cast(valid_mask, tf.float32), size)
        weights = self.attention(hypercolumn, valid_mask)
        batch = tf.shape(cam)[0]
        values = tf.reshape(cam, [batch, -1, self.num_classes - 1])
        refined = tf.reshape(tf.matmul(weights, values), tf.shape(cam)) + cam
        background = 2.0 - tf.reduce_max(refined, axis=-1, keepdims=True)
        scores = tf.concat([background, refined], axis=-1)
        return self.norm(self.classifier(scores), training=training)
