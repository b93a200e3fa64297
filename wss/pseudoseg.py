"""PseudoSeg training (Zou et al., ICLR 2021) as a Keras model with a custom ``train_step``.

Objective, per step with a labeled batch and an unlabeled (or image-level
labeled) batch of the same size::

    L = L_s + L_x + L_sa + w_u L_u  (+ weight decay)

    L_s  pixel cross-entropy of the decoder logits (upsampled to the crop)
    L_x  sigmoid cross-entropy of the classification head; targets: the labeled
         masks' class presence (only with ``use_attention``, as the reference),
         or in weakly mode the image-level labels of the weakly-labeled batch
    L_sa pixel cross-entropy of the SGC logits of the labeled batch, upsampled
         to the crop like L_s (``upsample_logits``); trains only the SGC layer
    L_u  soft cross-entropy between the pseudo label y of the weak view (no
         gradient) and the decoder logits of the strong view, at logit
         resolution: sum over pixels where v = 1 (and the pseudo label is
         confident, with a threshold) divided by sum(v)

v is the reference implementation's valid mask of the unlabeled sample: 1 on
real pixels, 0 on padding *and* on the strong view's CutOut square (the
batch's ``strong_valid_mask``), resized nearest (``resize_nearest_floor``) to
the logits. It also masks the weak view's SGC attention. The labeled batch's
``valid_mask`` (padding) masks its SGC the same way; the SGC resizes these
logit-size masks once more to its own resolution, as the reference does.

The pseudo label (``wss.fusion``): decoder prediction p of the weak view,
Grad-CAM of the weak view in inference mode (``wss.gradcam``) masked by the
classifier's predictions (or the image-level labels in weakly mode), refined
by SGC (``wss.sgc``), fused with p and sharpened.

The labeled batch's Grad-CAM (the SGC's training input) follows the
reference by default (``labeled_cam_head="training"``): the classification
head in training mode (Xception's dropout active, one mask for the CAM and
L_x) with the channel weights averaged over the batch;
``labeled_cam_head="inference"`` uses the clean inference-mode head instead.

Backbone passes per step (a pass = one forward of the network on one batch),
in this order:

* ``weak_view_bn="training"`` (the reference's batch-norm modes): 4 passes:
  the weak view in inference mode for Grad-CAM (forward only, plus the
  classification head's Jacobian; first, so that it reads the moving
  statistics as they were before the step's updates, as the reference, which
  applies its batch-norm updates after all passes), the labeled batch
  (training, forward + backward; gives L_s, L_x and the labeled CAM for
  L_sa), the weak view in training mode (forward only; forward + backward in
  weakly mode where it also gives L_x), the strong view (training, forward +
  backward). The reference spends a fifth pass (the labeled classification
  forward + backward).
* ``weak_view_bn="inference"``: 3 passes: the weak-view prediction and
  Grad-CAM come from one inference-mode pass. In weakly mode L_x then comes
  from the strong view's classification logits.

The wrapped network may be any segmentation network that returns
``{"logits", "cls_logits", "endpoints"}`` and exposes ``backbone_spec``
(``output_endpoint``, ``hypercolumn_endpoints``) and ``classification_head``.
docs/reference-semantics.md lists every point where this step was checked
against the reference and the options that deviate from it.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from core import losses as losses_lib
from core import metrics as metrics_lib
from core.layers import resize_nearest_align_corners, resize_nearest_floor
from core.trainer_model import SegmentationTrainer
from wss import fusion
from wss.gradcam import (cams_from_weights, channel_weights, grad_cam_from_features,
                         predicted_labels)
from wss.sgc import SelfAttentionGradCAM

WEAK_VIEW_BN_MODES = ("training", "inference")
LABELED_CAM_HEADS = ("training", "inference")


def soft_cross_entropy(targets, logits):
    """``-sum_c t_c log softmax(z)_c`` per pixel, ``[N, H, W]``."""
    return tf.nn.softmax_cross_entropy_with_logits(labels=tf.stop_gradient(targets),
                                                   logits=tf.cast(logits, tf.float32))


def mask_at(mask, reference):
    """A ``[N, H, W, 1]`` mask resized to ``reference``'s size as the reference
    implementation resizes its valid masks (TF1's default nearest resize)."""
    return resize_nearest_floor(tf.cast(mask, tf.float32), tf.shape(reference)[1:3])


class PseudoSegTrainer(SegmentationTrainer):
    """PseudoSeg with unlabeled data, or with image-level labels (``weakly``)."""

    # Class-balanced accuracies on unlabeled images whose masks exist (0 when
    # the records carry no masks) and the share of pixels the threshold keeps.
    MONITORS = ("acc_weak", "acc_pseudo", "acc_strong", "kept_ratio")

    def __init__(self, network, num_classes, ignore_label, *, weakly=False,
                 soft_pseudo_label=True, pseudo_label_threshold=0.0, unlabeled_weight=1.0,
                 temperature=0.5, pseudo_src="avg", logit_norm=True, fusion_gamma=0.5,
                 use_attention=True, attention_dim=128, hypercolumn_endpoints=None,
                 weak_view_bn="training", labeled_cam_head="training",
                 sgc_batch_norm_decay=0.999, sync_batch_norm=False, **kwargs):
        if pseudo_src not in fusion.PSEUDO_SOURCES:
            raise ValueError(f"pseudo_src must be one of {fusion.PSEUDO_SOURCES}, "
                             f"got {pseudo_src!r}")
        if pseudo_src in ("avg", "att") and not use_attention:
            raise ValueError(f"pseudo_src={pseudo_src!r} needs use_attention=True "
                             "(or use pseudo_src='decoder')")
        if weak_view_bn not in WEAK_VIEW_BN_MODES:
            raise ValueError(f"weak_view_bn must be one of {WEAK_VIEW_BN_MODES}, "
                             f"got {weak_view_bn!r}")
        if labeled_cam_head not in LABELED_CAM_HEADS:
            raise ValueError(f"labeled_cam_head must be one of {LABELED_CAM_HEADS}, "
                             f"got {labeled_cam_head!r}")
        if not 0.0 <= pseudo_label_threshold < 1.0:
            raise ValueError(f"pseudo_label_threshold must be in [0, 1), "
                             f"got {pseudo_label_threshold}")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        # The reference trains the classifier on the labeled batch only inside
        # its attention branch; in weakly mode always, on the weakly-labeled batch.
        self.has_classification_loss = weakly or use_attention
        names = ["loss_seg"] + (["loss_cls"] if self.has_classification_loss else [])
        names += (["loss_sgc"] if use_attention else []) + ["loss_consistency"]
        super().__init__(network, num_classes, ignore_label, loss_names=names, **kwargs)
        for name in self.MONITORS:
            self.trackers[name] = keras.metrics.Mean(name=name)
        self.weakly = weakly
        self.soft_pseudo_label = soft_pseudo_label
        self.pseudo_label_threshold = pseudo_label_threshold
        self.unlabeled_weight = unlabeled_weight
        self.temperature = temperature
        self.pseudo_src = pseudo_src
        self.logit_norm = logit_norm
        self.fusion_gamma = fusion_gamma
        self.use_attention = use_attention
        self.weak_view_bn = weak_view_bn
        self.labeled_cam_head = labeled_cam_head
        self.sync_batch_norm = sync_batch_norm
        spec = network.backbone_spec
        self.gradcam_endpoint = spec.output_endpoint
        self.hypercolumn_endpoints = tuple(hypercolumn_endpoints or spec.hypercolumn_endpoints)
        self.sgc = SelfAttentionGradCAM(num_classes, attention_dim,
                                        batch_norm_decay=sgc_batch_norm_decay,
                                        synchronized=sync_batch_norm,
                                        name="sgc") if use_attention else None

    # -- pieces ---------------------------------------------------------------

    def prepare(self, sample_images):
        """Builds the SGC layer from the hypercolumn's channel counts."""
        if self.sgc is not None and not self.sgc.built:
            outputs = self.network(sample_images, training=False)
            self.sgc.build([outputs["endpoints"][n].shape for n in self.hypercolumn_endpoints])
        super().prepare(sample_images)

    def checkpoint_items(self):
        items = super().checkpoint_items()
        if self.sgc is not None:
            items["sgc"] = self.sgc
        return items

    def cams(self, outputs, image_labels):
        """Normalised Grad-CAMs of a network output (head in inference mode)."""
        cams, _ = grad_cam_from_features(self.network.classification_head,
                                         outputs["endpoints"][self.gradcam_endpoint],
                                         image_labels)
        return cams

    def labeled_cams(self, outputs, image_labels):
        """The labeled batch's Grad-CAMs and the classification logits for L_x.

        ``labeled_cam_head="training"`` (the reference): one training-mode call
        of the head gives both, the CAM's channel weights averaged over the
        batch, like a batch statistic: over this replica's batch (the
        reference's per-clone batch), or with ``sync_batch_norm`` over the
        global batch, so that the step does not depend on the replica count.
        ``"inference"``: the clean head's CAM, and the network's own
        training-mode logits for L_x.
        """
        if self.labeled_cam_head == "inference":
            return self.cams(outputs, image_labels), outputs["cls_logits"]
        features = outputs["endpoints"][self.gradcam_endpoint]
        alpha, cls_logits = channel_weights(self.network.classification_head, features,
                                            training=True)
        if self.sync_batch_norm:
            alpha = losses_lib.cross_replica_sum(tf.reduce_sum(alpha, axis=0, keepdims=True))
            alpha /= losses_lib.cross_replica_sum(tf.cast(tf.shape(features)[0], tf.float32))
        else:
            alpha = tf.reduce_mean(alpha, axis=0, keepdims=True)
        return cams_from_weights(features, alpha, image_labels), cls_logits

    def sgc_logits(self, outputs, cams, valid_mask, training):
        """SGC logits; ``valid_mask`` is resized to the decoder logits' size, then
        (inside the layer) to the CAM's, as the reference resizes it."""
        features = [outputs["endpoints"][n] for n in self.hypercolumn_endpoints]
        valid_mask = mask_at(valid_mask, outputs["logits"])
        return self.sgc(features, cams, valid_mask=valid_mask, training=training)

    def pseudo_label(self, weak_logits, sgc_logits):
        """Pseudo-label distribution and confidence mask of the weak view (no gradient)."""
        temperature = self.temperature if self.soft_pseudo_label else 1.0
        probabilities = fusion.pseudo_label(self.pseudo_src, weak_logits, sgc_logits,
                                            gamma=self.fusion_gamma, temperature=temperature,
                                            logit_norm=self.logit_norm)
        keep = fusion.confidence_mask(probabilities, self.pseudo_label_threshold)
        if not self.soft_pseudo_label:
            probabilities = fusion.hard_pseudo_label(probabilities)
        return tf.stop_gradient(probabilities), tf.stop_gradient(keep)

    def cam_labels(self, unlabeled, inference):
        """Classes whose CAMs the weak view keeps: the image-level labels in
        weakly mode, else the classifier's predictions (inference mode)."""
        if self.weakly:
            return unlabeled["image_labels"]
        return predicted_labels(inference["cls_logits"])

    # -- the step -------------------------------------------------------------

    def compute_losses(self, batch):
        labeled, unlabeled = batch["labeled"], batch["unlabeled"]
        terms, extras = {}, {}

        # Weak view in inference mode first: Grad-CAM reads the moving
        # statistics before this step's training-mode passes update them.
        inference = None
        if self.use_attention or self.weak_view_bn == "inference":
            inference = self.network(unlabeled["weak_image"], training=False)

        # Labeled batch: one training-mode pass gives L_s, L_x and L_sa.
        outputs = self.network(labeled["image"], training=True)
        terms["loss_seg"] = self.segmentation_loss(outputs["logits"], labeled["label"])
        if self.use_attention:
            labeled_cams, labeled_cls_logits = self.labeled_cams(
                outputs, labeled["class_presence"])
            if not self.weakly:
                terms["loss_cls"] = self.classification_loss(labeled_cls_logits,
                                                             labeled["class_presence"])
            labeled_sgc = self.sgc_logits(outputs, labeled_cams, labeled["valid_mask"],
                                          training=True)
            terms["loss_sgc"] = losses_lib.global_mean(*losses_lib.pixel_cross_entropy(
                labeled_sgc, labeled["label"], self.num_classes, self.ignore_label,
                upsample=self.upsample_logits))

        # Weak view: the pseudo label, without gradient (except L_x in weakly mode).
        weak_outputs = (inference if self.weak_view_bn == "inference"
                        else self.network(unlabeled["weak_image"], training=True))
        weak_logits = tf.stop_gradient(weak_outputs["logits"])
        valid = mask_at(unlabeled["strong_valid_mask"], weak_logits)  # padding and CutOut
        sgc_logits = None
        if self.use_attention:
            weak_cams = self.cams(inference, self.cam_labels(unlabeled, inference))
            sgc_logits = tf.stop_gradient(self.sgc_logits(inference, weak_cams, valid,
                                                          training=True))
        pseudo, keep = self.pseudo_label(weak_logits, sgc_logits)

        # Strong view: consistency with the pseudo label.
        strong_outputs = self.network(unlabeled["strong_image"], training=True)
        strong_logits = strong_outputs["logits"]
        per_pixel = soft_cross_entropy(pseudo, strong_logits)
        terms["loss_consistency"] = self.unlabeled_weight * losses_lib.global_mean(
            tf.reduce_sum(per_pixel * (valid * keep)[..., 0]), tf.reduce_sum(valid))

        if self.weakly:
            cls_logits = (weak_outputs["cls_logits"] if self.weak_view_bn == "training"
                          else strong_outputs["cls_logits"])
            terms["loss_cls"] = self.classification_loss(cls_logits, unlabeled["image_labels"])

        extras["pixel_accuracy"] = self.global_pixel_accuracy(outputs["logits"],
                                                              labeled["label"])
        extras.update(self.monitors(unlabeled.get("monitor_label"), weak_logits, pseudo,
                                    strong_logits, keep, valid))
        total = tf.add_n(list(terms.values()))
        return total, terms, extras

    # -- monitoring -----------------------------------------------------------

    def _balanced_accuracy(self, labels, predictions, mask=None):
        if mask is not None:
            labels = tf.where(mask > 0, labels, self.ignore_label)
        correct, total = metrics_lib.per_class_correct_and_total(
            labels, predictions, self.num_classes, self.ignore_label)
        correct = losses_lib.cross_replica_sum(correct)
        total = losses_lib.cross_replica_sum(total)
        return metrics_lib.class_balanced_accuracy(correct, total)

    def monitors(self, monitor_label, weak_logits, pseudo, strong_logits, keep, valid):
        """Class-balanced accuracies against masks the loss never reads, and the
        share of the valid pixels (L_u's denominator) the confidence threshold keeps."""
        monitors = {"kept_ratio": tf.math.divide_no_nan(
            losses_lib.cross_replica_sum(tf.reduce_sum(keep * valid)),
            losses_lib.cross_replica_sum(tf.reduce_sum(valid)))}
        if monitor_label is None:
            return monitors
        labels = resize_nearest_floor(tf.cast(monitor_label, tf.int32),
                                      tf.shape(weak_logits)[1:3])
        argmax = lambda x: tf.argmax(x, axis=-1, output_type=tf.int32)[..., None]  # noqa: E731
        monitors["acc_weak"] = self._balanced_accuracy(labels, argmax(weak_logits))
        monitors["acc_pseudo"] = self._balanced_accuracy(labels, argmax(pseudo), keep)
        monitors["acc_strong"] = self._balanced_accuracy(labels, argmax(strong_logits))
        return monitors

    # -- TensorBoard panels ---------------------------------------------------

    def summaries(self, batch):
        """Panels: weak and strong views, pseudo label, CAM, SGC and decoder
        prediction of the unlabeled batch, plus the labeled input, label and
        prediction. Histograms: the max probability per pixel of each pseudo
        source (decoder, SGC, fused label). All in inference mode, so summaries
        never touch batch-norm statistics."""
        panels, histograms = super().summaries(batch["labeled"])
        unlabeled = batch["unlabeled"]
        outputs = self.network(unlabeled["weak_image"], training=False)
        labels = self.cam_labels(unlabeled, outputs)
        argmax = lambda x: tf.argmax(x, axis=-1, output_type=tf.int32)[..., None]  # noqa: E731
        sgc_logits = None
        if self.use_attention:
            cams = self.cams(outputs, labels)
            sgc_logits = self.sgc_logits(outputs, cams, unlabeled["strong_valid_mask"],
                                         training=False)
            panels["cam_max"] = fusion.resize_to(tf.reduce_max(cams, -1, keepdims=True),
                                                 unlabeled["weak_image"])
            panels["sgc_prediction"] = argmax(fusion.resize_to(sgc_logits,
                                                               unlabeled["weak_image"]))
            histograms["max_probability/sgc"] = tf.reduce_max(
                tf.nn.softmax(fusion.resize_to(sgc_logits, outputs["logits"])), axis=-1)
        pseudo, _ = self.pseudo_label(outputs["logits"], sgc_logits)
        histograms["max_probability/decoder"] = tf.reduce_max(
            tf.nn.softmax(tf.cast(outputs["logits"], tf.float32)), axis=-1)
        histograms["max_probability/pseudo_label"] = tf.reduce_max(pseudo, axis=-1)
        size = tf.shape(unlabeled["weak_image"])[1:3]
        panels.update({
            "weak_view": unlabeled["weak_image"],
            "strong_view": unlabeled["strong_image"],
            "weak_decoder_prediction": argmax(fusion.resize_to(outputs["logits"],
                                                               unlabeled["weak_image"])),
            "pseudo_label": resize_nearest_align_corners(argmax(pseudo), size),
        })
        return panels, histograms
