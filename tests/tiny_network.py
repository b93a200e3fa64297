"""A small non-DeepLab segmentation network with the interface PseudoSeg needs:
``{"logits", "cls_logits", "endpoints"}``, ``backbone_spec`` and
``classification_head``. Three strided convs, logits at stride 4, hypercolumn
maps at strides 4 and 8, Grad-CAM on the stride-8 map, and a classification
head that is not linear in the features."""

import keras
import tensorflow as tf

from core.deeplab import BackboneSpec

class TinyHead(keras.layers.Layer):
    """A classification head that is NOT linear in the features:
    1x1 conv + ReLU (position-dependent gradient), spatial mean, Dense + ReLU, Dense."""

    def __init__(self, num_classes, **kwargs):
        super().__init__(**kwargs)
        self.mix = keras.layers.Conv2D(12, 1, activation="relu", name="mix")
        self.hidden = keras.layers.Dense(12, activation="relu", name="hidden")
        self.out = keras.layers.Dense(num_classes - 1, name="out")

    def call(self, features, training=None):
        x = tf.reduce_mean(self.mix(features), axis=[1, 2])
        return self.out(self.hidden(x))


class TinyNet(keras.Model):
    """A small non-DeepLab segmentation network with the interface PseudoSeg needs."""

    def __init__(self, num_classes=5, **kwargs):
        super().__init__(**kwargs)
        self.backbone_spec = BackboneSpec(
            scope="tiny", output_endpoint="tiny/block3",
            hypercolumn_endpoints=("tiny/block2", "tiny/block3"),
            decoder_endpoint="tiny/block1", cls_scope="tiny/cls", cls_dropout=0.0)
        self.conv1 = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="tiny.conv1")
        self.bn1 = keras.layers.BatchNormalization(name="tiny.bn1")
        self.conv2 = keras.layers.Conv2D(16, 3, strides=2, padding="same", name="tiny.conv2")
        self.bn2 = keras.layers.BatchNormalization(name="tiny.bn2")
        self.conv3 = keras.layers.Conv2D(16, 3, strides=2, padding="same", name="tiny.conv3")
        self.seg = keras.layers.Conv2D(num_classes, 1, name="tiny.logits")
        self.classification_head = TinyHead(num_classes, name="tiny.cls")

    def call(self, images, training=False):
        x = tf.cast(images, tf.float32) / 127.5 - 1.0
        b1 = tf.nn.relu(self.bn1(self.conv1(x), training=training))
        b2 = tf.nn.relu(self.bn2(self.conv2(b1), training=training))
        b3 = self.conv3(b2)  # linear: the CAM's ReLU has negative sums to cut
        up = tf.cast(tf.compat.v1.image.resize_bilinear(b3, tf.shape(b2)[1:3],
                                                        align_corners=True), b2.dtype)
        logits = self.seg(tf.concat([b2, up], axis=-1))
        return {"logits": logits,
                "cls_logits": self.classification_head(b3, training=training),
                "endpoints": {"tiny/block1": b1, "tiny/block2": b2, "tiny/block3": b3}}
