"""Keras models with custom ``train_step``: the machinery both trainers share,
and the supervised DeepLabv3+ baseline.

Supervised objective (the paper's comparison point)::

    L = L_s + w_x L_x + weight_decay * sum_k ||W_k||^2 / 2

L_s: pixel softmax cross-entropy of the logits upsampled to the crop, ignore
label excluded; L_x: sigmoid cross-entropy of the classification head against
the class-presence vectors of the labeled masks; the weight decay covers every
Conv2D kernel (not depthwise kernels, biases or batch norm), as DeepLab.

Gradients follow DeepLab's multipliers: biases x2, and the last layers (the
logits, or the whole head) x ``last_layer_gradient_multiplier``.

All losses are normalised by *global* counts (``core.losses.global_mean``), so a
step on R replicas with global batch B equals a step on one replica with B.
Logged values are the global values, identical on every replica, so metric
trackers report them correctly under any ``tf.distribute`` strategy.
"""

from __future__ import annotations

from typing import Iterable

import keras
import numpy as np
import tensorflow as tf

from core import losses as losses_lib
from core import metrics as metrics_lib
from core.deeplab import regularized_kernels
from core.layers import resize_bilinear_align_corners

# Scopes of DeepLab's "last layers" (``get_extra_layer_scopes``), as Keras
# layer-name prefixes. The classification head of the backbone is added per model.
LOGITS_SCOPES = ("logits.semantic",)
HEAD_SCOPES = ("logits.semantic", "image_pooling", "aspp", "concat_projection", "decoder")


def last_layer_scopes(network, logits_only: bool) -> tuple[str, ...]:
    """Layer-name prefixes of the last layers (DeepLab's ``last_layers``)."""
    scopes = LOGITS_SCOPES if logits_only else HEAD_SCOPES
    spec = getattr(network, "backbone_spec", None)
    if spec is not None:
        scopes = scopes + (spec.cls_scope.replace("/", "."),)
    return scopes


def freeze_batch_norm(model: keras.Model):
    """DeepLab's ``fine_tune_batch_norm=False``: every batch norm of ``model``
    normalises with its moving statistics in training too and never updates
    them; gamma and beta are still trained, as in DeepLab (see
    ``core.layers.DeepLabBatchNorm``). Small batches (DeepLab: below 12) give
    batch moments too noisy to train on.

    Raises TypeError for a batch norm that is not a ``DeepLabBatchNorm``
    (a plain Keras one cannot keep gamma and beta trainable while frozen).
    """
    from core.layers import deeplab_batch_norms

    for layer in deeplab_batch_norms(model, "freeze_batch_norm"):
        layer.use_moving_statistics = True


class SegmentationTrainer(keras.Model):
    """Base class: a network plus training machinery.

    Subclasses implement ``compute_losses(batch) -> (total, terms, extras)``
    inside the gradient tape.
    """

    def __init__(self, network: keras.Model, num_classes: int, ignore_label: int, *,
                 weight_decay: float = 0.0, last_layer_gradient_multiplier: float = 1.0,
                 last_layers: Iterable[str] = (), loss_names: Iterable[str] = (),
                 upsample_logits: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.network = network
        self.num_classes = num_classes
        self.ignore_label = ignore_label
        self.weight_decay = weight_decay
        self.last_layer_gradient_multiplier = last_layer_gradient_multiplier
        self.last_layers = tuple(last_layers)
        self.upsample_logits = upsample_logits
        self._decay_kernels = None
        names = ["loss", *loss_names, "weight_decay", "learning_rate", "pixel_accuracy"]
        self.trackers = {name: keras.metrics.Mean(name=name) for name in names}

    # -- Keras plumbing -------------------------------------------------------

    @property
    def metrics(self):
        return list(self.trackers.values())

    def call(self, images, training=False):
        return self.network(images, training=training)

    def prepare(self, sample_images):
        """Builds every layer before ``fit`` (call on a sample batch of images)."""
        if not self.network.built:
            self.network(sample_images, training=False)
        self.built = True

    def checkpoint_items(self) -> dict:
        """What a training checkpoint holds besides the optimizer: the network and
        any layers the method adds (not the metric trackers, which are transient
        and would make saving a collective operation under multi-worker training)."""
        return {"network": self.network}

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Keras's hook pulls a batch off the iterator to build layers
        symbolically, which skips that batch and, under MultiWorkerMirroredStrategy,
        fails to reduce nested batch dicts. ``prepare`` and ``optimizer.build``
        have built everything, so there is nothing to do."""
        if not self.built or self.optimizer is None or not self.optimizer.built:
            raise RuntimeError("call prepare(sample_images) and optimizer.build("
                               "trainable_variables) before fit")

    def decay_kernels(self):
        """The network's regularised kernels (method layers, like the reference's
        SGC, carry no weight decay)."""
        if self._decay_kernels is None:
            self._decay_kernels = list(regularized_kernels(self.network))
        return self._decay_kernels

    def gradient_multiplier(self, variable) -> float:
        """DeepLab's multiplier of ``variable``'s gradient: biases x2, last layers
        x ``last_layer_gradient_multiplier``."""
        layer_name, _, short = variable.path.rpartition("/")
        layer_name = layer_name.rsplit("/", 1)[-1]
        factor = 2.0 if short == "bias" else 1.0
        if any(layer_name.startswith(scope) for scope in self.last_layers):
            factor *= self.last_layer_gradient_multiplier
        return factor

    # -- the step -------------------------------------------------------------

    def compute_losses(self, batch):
        raise NotImplementedError

    def train_step(self, batch):
        variables = self.trainable_variables
        with tf.GradientTape() as tape:
            total, terms, extras = self.compute_losses(batch)
            decay = losses_lib.l2_weight_decay(self.decay_kernels(), self.weight_decay)
            # Every replica adds 1/R of the decay; gradients are summed over replicas.
            total = total + decay / losses_lib.num_replicas()
            scaled = self.optimizer.scale_loss(total)
        learning_rate = self.current_learning_rate()  # the rate this update uses
        gradients = tape.gradient(scaled, variables)
        gradients = [None if g is None else g * self.gradient_multiplier(v)
                     for g, v in zip(gradients, variables)]
        self.optimizer.apply_gradients(
            [(g, v) for g, v in zip(gradients, variables) if g is not None])
        logged = {"loss": losses_lib.cross_replica_sum(total), "weight_decay": decay}
        logged.update({name: losses_lib.cross_replica_sum(value) for name, value in terms.items()})
        logged.update(extras)
        logged["learning_rate"] = learning_rate
        for name, value in logged.items():
            self.trackers[name].update_state(value)
        results = {name: tracker.result() for name, tracker in self.trackers.items()}
        if isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
            # Keras reduces the logs of multi-worker runs along axis 0
            # (reduce_per_replica in keras/src/backend/tensorflow/trainer.py),
            # which scalars do not have. The values are global, so any
            # reduction of them is the value itself.
            results = {name: tf.reshape(value, [1]) for name, value in results.items()}
        return results

    def current_learning_rate(self):
        lr = self.optimizer.learning_rate
        return tf.cast(lr(self.optimizer.iterations) if callable(lr) else lr, tf.float32)

    # -- helpers for subclasses -----------------------------------------------

    def segmentation_loss(self, logits, labels):
        """L_s: pixel cross-entropy, ignore label excluded, global mean."""
        return losses_lib.global_mean(*losses_lib.pixel_cross_entropy(
            logits, labels, self.num_classes, self.ignore_label, upsample=self.upsample_logits))

    def classification_loss(self, cls_logits, targets):
        """L_x: multi-label sigmoid cross-entropy, global mean."""
        return losses_lib.global_mean(
            *losses_lib.multilabel_sigmoid_cross_entropy(cls_logits, targets))

    def global_pixel_accuracy(self, logits, labels):
        """Pixel accuracy of ``logits`` (upsampled to the labels) over all replicas."""
        logits = resize_bilinear_align_corners(tf.cast(logits, tf.float32), tf.shape(labels)[1:3])
        predictions = tf.argmax(logits, axis=-1, output_type=tf.int32)
        correct, total = metrics_lib.per_class_correct_and_total(
            labels, predictions, self.num_classes, self.ignore_label)
        correct = losses_lib.cross_replica_sum(tf.reduce_sum(correct))
        total = losses_lib.cross_replica_sum(tf.reduce_sum(total))
        return tf.math.divide_no_nan(correct, total)

    def predict_probabilities(self, images):
        """Softmax probabilities at the input size (inference mode)."""
        logits = self.network(images, training=False)["logits"]
        logits = resize_bilinear_align_corners(tf.cast(logits, tf.float32), tf.shape(images)[1:3])
        return tf.nn.softmax(logits, axis=-1)

    def summaries(self, batch):
        """TensorBoard panels and histograms of a batch (inference mode).

        Returns ``(images, histograms)``: images are RGB ``[N, H, W, 3]`` in
        [0, 255], class-index maps ``[N, H, W, 1]`` or heat maps in [0, 1];
        histograms are tensors of values.
        """
        images = batch["image"]
        probabilities = self.predict_probabilities(images)
        panels = {"image": images, "label": batch["label"],
                  "prediction": tf.argmax(probabilities, axis=-1, output_type=tf.int32)[..., None]}
        return panels, {"max_probability/prediction": tf.reduce_max(probabilities, axis=-1)}


class SupervisedSegmenter(SegmentationTrainer):
    """The supervised DeepLabv3+ baseline: ``L = L_s + w_x L_x + decay``."""

    def __init__(self, network, num_classes, ignore_label, *, classification_loss_weight=1.0,
                 **kwargs):
        names = ["loss_seg"] + (["loss_cls"] if classification_loss_weight else [])
        super().__init__(network, num_classes, ignore_label, loss_names=names, **kwargs)
        self.classification_loss_weight = classification_loss_weight

    def compute_losses(self, batch):
        outputs = self.network(batch["image"], training=True)
        terms = {"loss_seg": self.segmentation_loss(outputs["logits"], batch["label"])}
        if self.classification_loss_weight:
            terms["loss_cls"] = self.classification_loss_weight * self.classification_loss(
                outputs["cls_logits"], batch["class_presence"])
        extras = {"pixel_accuracy": self.global_pixel_accuracy(outputs["logits"], batch["label"])}
        return tf.add_n(list(terms.values())), terms, extras
