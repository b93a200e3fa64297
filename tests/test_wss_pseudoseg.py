"""PseudoSegTrainer (wss/pseudoseg.py): gradients, the monitor masks, weakly mode,
the L_u normalisation against numpy, and short fits (DeepLab and a tiny
non-DeepLab network).

Networks are built with ``use_dropout=False`` so that two ``compute_losses``
calls with the same weights and batch-norm state are deterministic.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import wss.pseudoseg as pseudoseg_lib
from core.deeplab import build_model
from tests.numpy_reference import log_softmax as np_log_softmax
from tests.numpy_reference import resize_bilinear_align_corners as np_bilinear_align_corners
from tests.numpy_reference import resize_nearest_align_corners as np_nearest_align_corners
from tests.numpy_reference import resize_nearest_floor as np_nearest_floor
from tests.tiny_network import TinyNet
from wss.pseudoseg import PseudoSegTrainer
from wss.sgc import SelfAttentionGradCAM

C = 4
B = 2
H = 33
IGNORE = 255
LOSS_TERMS = ("loss_seg", "loss_cls", "loss_sgc", "loss_consistency")


# -- data -----------------------------------------------------------------------

def structured(rng):
    """Labels with large regions and images whose colour follows the label."""
    label = np.zeros((B, H, H, 1), np.int32)
    label[:, :, H // 2:] = 1
    label[:, H // 2:, :H // 2] = 2
    label[1, :H // 3] = 3
    colors = np.array([[30, 30, 30], [200, 40, 40], [40, 200, 40], [40, 40, 200]], np.float32)
    image = colors[label[..., 0]] + rng.normal(0, 20, (B, H, H, 3))
    return label, np.clip(image, 0, 255).astype(np.float32)


def make_batch(seed=0):
    rng = np.random.default_rng(seed)
    label, image = structured(rng)
    monitor_label, weak = structured(rng)
    weak = weak[:, :, ::-1].copy()
    monitor_label = monitor_label[:, :, ::-1].copy()
    valid = np.ones((B, H, H, 1), np.float32)
    valid[:, -6:] = 0.0           # padding: logit rows 7, 8 (of 9)
    valid[1, :, -10:] = 0.0       # and columns 7, 8 of image 1
    label[:, -6:] = IGNORE
    strong_valid = valid.copy()
    strong_valid[:, 6:18, 10:22] = 0.0  # CutOut
    strong = np.clip(weak * 0.7 + 30 + rng.normal(0, 10, weak.shape), 0, 255).astype(np.float32)
    strong[strong_valid[..., 0] == 0] = 127.0
    strong[valid[..., 0] == 0] = 127.0
    presence = np.array([[1, 1, 0], [1, 1, 1]], np.float32)
    return {
        "labeled": {"image": image, "label": label, "valid_mask": valid,
                    "class_presence": presence},
        "unlabeled": {"weak_image": weak, "strong_image": strong, "valid_mask": valid,
                      "strong_valid_mask": strong_valid, "monitor_label": monitor_label,
                      "image_labels": np.array([[0, 1, 1], [1, 0, 0]], np.float32)},
    }


def as_tensors(batch):
    return tf.nest.map_structure(tf.constant, batch)


# -- numpy ----------------------------------------------------------------------

def np_sigmoid_cross_entropy(logits, targets):
    x = logits.astype(np.float64)
    return np.mean(np.maximum(x, 0) - x * targets + np.log1p(np.exp(-np.abs(x))))


def is_zero(g):
    return g is None or not np.any(tf.convert_to_tensor(g).numpy())


# -- networks -------------------------------------------------------------------

@pytest.fixture(scope="module")
def network():
    keras.utils.set_random_seed(0)
    net = build_model("mobilenet_v2", C, use_dropout=False)
    net(np.zeros((1, H, H, 3), np.float32), training=False)
    return net


@pytest.fixture(autouse=True)
def restore_network(request):
    """Every test sees the same weights and batch-norm statistics."""
    if "network" not in request.fixturenames:
        yield
        return
    net = request.getfixturevalue("network")
    saved = [v.numpy() for v in net.variables]
    yield
    for v, value in zip(net.variables, saved):
        v.assign(value)


def make_trainer(net, **kwargs):
    trainer = PseudoSegTrainer(net, C, IGNORE, **kwargs)
    trainer.prepare(np.zeros((1, H, H, 3), np.float32))
    return trainer


class Snapshot:
    """Saves and restores every variable of a trainer (weights and BN statistics)."""

    def __init__(self, trainer):
        self.variables = list(trainer.variables)
        self.values = [v.numpy() for v in self.variables]

    def restore(self):
        for v, value in zip(self.variables, self.values):
            v.assign(value)


# -- gradients ------------------------------------------------------------------

def test_pseudo_label_carries_no_gradient(network):
    trainer = make_trainer(network)
    batch = as_tensors(make_batch())
    weak = batch["unlabeled"]["weak_image"]
    strong = batch["unlabeled"]["strong_image"]
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([weak, strong])
        total, terms, _ = trainer.compute_losses(batch)
    # The weak view reaches the losses only through the pseudo label.
    assert is_zero(tape.gradient(terms["loss_consistency"], weak))
    assert is_zero(tape.gradient(total, weak))
    # The SGC layer reaches L_u only through the pseudo label.
    for g in tape.gradient(terms["loss_consistency"], trainer.sgc.trainable_variables):
        assert is_zero(g)
    # Positive controls: the strong view and the network do get gradient.
    assert not is_zero(tape.gradient(terms["loss_consistency"], strong))
    assert any(not is_zero(g) for g in
               tape.gradient(terms["loss_consistency"], network.trainable_variables))


def test_weakly_mode_l_u_has_no_gradient_into_the_weak_view(network):
    trainer = make_trainer(network, weakly=True)
    batch = as_tensors(make_batch())
    weak = batch["unlabeled"]["weak_image"]
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(weak)
        _, terms, _ = trainer.compute_losses(batch)
    assert is_zero(tape.gradient(terms["loss_consistency"], weak))
    # L_x does come from the weak view here (positive control).
    assert not is_zero(tape.gradient(terms["loss_cls"], weak))


def test_l_sa_trains_only_the_sgc_layer(network):
    trainer = make_trainer(network)
    batch = as_tensors(make_batch())
    with tf.GradientTape(persistent=True) as tape:
        _, terms, _ = trainer.compute_losses(batch)
    for v, g in zip(network.trainable_variables,
                    tape.gradient(terms["loss_sgc"], network.trainable_variables)):
        assert is_zero(g), v.path
    gradients = tape.gradient(terms["loss_sgc"], trainer.sgc.trainable_variables)
    assert gradients and all(not is_zero(g) for g in gradients)


# -- the monitor masks never reach a loss ----------------------------------------

def test_scrambled_monitor_labels_leave_every_loss_unchanged(network):
    trainer = make_trainer(network)
    snapshot = Snapshot(trainer)
    batch = make_batch()
    scrambled = make_batch()
    rng = np.random.default_rng(9)
    scrambled["unlabeled"]["monitor_label"] = rng.integers(
        0, C, scrambled["unlabeled"]["monitor_label"].shape).astype(np.int32)
    missing = make_batch()
    del missing["unlabeled"]["monitor_label"]

    results = []
    for b in (batch, scrambled, missing):
        snapshot.restore()  # the same weights and moving statistics for every call
        total, terms, extras = trainer.compute_losses(as_tensors(b))
        results.append((float(total), {k: float(v) for k, v in terms.items()},
                        {k: float(v) for k, v in extras.items()}))
    assert set(results[0][1]) == set(LOSS_TERMS)
    for total, terms, _ in results[1:]:
        assert total == pytest.approx(results[0][0], rel=1e-6, abs=1e-7)
        for name in LOSS_TERMS:
            assert terms[name] == pytest.approx(results[0][1][name], rel=1e-6, abs=1e-7), name
    # The monitors did read the scrambled masks (so the scramble was effective).
    monitors = ("acc_weak", "acc_pseudo", "acc_strong")
    assert any(abs(results[0][2][m] - results[1][2][m]) > 1e-3 for m in monitors)
    assert not any(m in results[2][2] for m in monitors)


# -- weakly mode ------------------------------------------------------------------

@pytest.mark.parametrize("weakly", [True, False])
def test_cam_class_mask_comes_from_image_labels_in_weakly_mode(network, monkeypatch, weakly):
    # Make the classifier predict every class (sigmoid(30) >= 0.5), so that
    # predictions and the given image-level labels disagree.
    conv = network.classification_head.conv
    conv.bias.assign(conv.bias + 30.0)
    trainer = make_trainer(network, weakly=weakly, labeled_cam_head="inference")
    calls = []
    original = pseudoseg_lib.grad_cam_from_features

    def spy(head, features, image_labels):
        cams, logits = original(head, features, image_labels)
        calls.append((np.asarray(image_labels), cams.numpy()))
        return cams, logits

    monkeypatch.setattr(pseudoseg_lib, "grad_cam_from_features", spy)
    batch = make_batch()
    given = np.array([[0, 1, 0], [0, 0, 0]], np.float32)
    batch["unlabeled"]["image_labels"] = given
    _, terms, _ = trainer.compute_losses(as_tensors(batch))

    assert len(calls) == 2  # labeled CAM (for L_sa), then the weak-view CAM
    np.testing.assert_array_equal(calls[0][0], batch["labeled"]["class_presence"])
    labels, cams = calls[1]
    if weakly:
        np.testing.assert_array_equal(labels, given)
        assert np.all(cams[1] == 0)              # no class given: the SGC input CAM is 0
        assert np.all(cams[0][..., [0, 2]] == 0)
        assert cams[0][..., 1].max() == pytest.approx(1.0)
        # L_x targets are the image-level labels, on the weak view's logits.
        snapshot = Snapshot(trainer)
        logits = network(batch["unlabeled"]["weak_image"], training=True)["cls_logits"].numpy()
        snapshot.restore()
        assert terms["loss_cls"].numpy() == pytest.approx(
            np_sigmoid_cross_entropy(logits, given), rel=1e-5)
    else:
        np.testing.assert_array_equal(labels, np.ones((B, C - 1)))  # the predictions
        assert np.all(cams.max(axis=(1, 2)) > 0)
        logits = network(batch["labeled"]["image"], training=True)["cls_logits"].numpy()
        assert terms["loss_cls"].numpy() == pytest.approx(
            np_sigmoid_cross_entropy(logits, batch["labeled"]["class_presence"]), rel=1e-5)


# -- L_u against numpy ------------------------------------------------------------

@pytest.mark.parametrize("soft,use_threshold", [(True, False), (True, True), (False, True)])
def test_consistency_loss_normalisation(network, soft, use_threshold):
    """L_u = w_u * sum_{v=1, confident} CE(y, strong) / sum(v), with y the
    decoder-only pseudo label of the weak view (pseudo_src='decoder') and v
    the reference's valid mask: padding and CutOut excluded, resized with
    TF1's default nearest resize (floor) to the logits."""
    weight, temperature = 0.5, 0.5
    trainer = make_trainer(network, pseudo_src="decoder", soft_pseudo_label=soft,
                           unlabeled_weight=weight, temperature=temperature)
    snapshot = Snapshot(trainer)
    batch = make_batch()
    u = batch["unlabeled"]
    # Training-mode outputs use batch statistics (and there is no dropout), so
    # they are the ones compute_losses sees whatever the moving statistics.
    weak = network(u["weak_image"], training=True)["logits"].numpy().astype(np.float64)
    strong = network(u["strong_image"], training=True)["logits"].numpy().astype(np.float64)
    snapshot.restore()
    assert weak.shape == (B, 9, 9, C)

    probabilities = np.exp(np_log_softmax(weak))
    if soft:
        probabilities = probabilities ** (1 / temperature)
        probabilities /= probabilities.sum(-1, keepdims=True)
    confidence = probabilities.max(-1)
    threshold = 0.0
    if use_threshold:  # between two neighbouring confidences, keeping ~60%
        ranked = np.sort(confidence.ravel())
        k = int(0.4 * ranked.size)
        threshold = float(ranked[k - 1] + ranked[k]) / 2
        assert ranked[k] - ranked[k - 1] > 1e-6
    keep = (confidence >= threshold).astype(np.float64)
    pseudo = probabilities if soft else np.eye(C)[probabilities.argmax(-1)]

    valid = np_nearest_floor(u["strong_valid_mask"], (9, 9))[..., 0]
    cross_entropy = -(pseudo * np_log_softmax(strong)).sum(-1)
    expected = weight * (cross_entropy * valid * keep).sum() / valid.sum()
    # The CutOut counts in the denominator (v), and the floor resize differs
    # from an aligned-corners one here, so both are pinned down.
    padding = np_nearest_floor(u["valid_mask"], (9, 9))[..., 0]
    assert valid.sum() < padding.sum() < padding.size
    assert np.any(valid != np_nearest_align_corners(u["strong_valid_mask"], (9, 9))[..., 0])
    if use_threshold:
        assert (valid * keep).sum() < valid.sum()

    trainer.pseudo_label_threshold = threshold
    _, terms, extras = trainer.compute_losses(as_tensors(batch))
    assert float(terms["loss_consistency"]) == pytest.approx(expected, rel=1e-5)
    assert float(extras["kept_ratio"]) == pytest.approx((keep * valid).sum() / valid.sum(),
                                                        rel=1e-6)


class SGCCalls:
    """Records the arguments and result of every SGC call (labeled batch first)."""

    def __init__(self, monkeypatch):
        self.calls = []
        original = SelfAttentionGradCAM.call

        def spy(layer, features, cam, valid_mask=None, training=False):
            out = original(layer, features, cam, valid_mask=valid_mask, training=training)
            self.calls.append({"cam": np.asarray(cam), "valid_mask": np.asarray(valid_mask),
                               "training": training, "logits": np.asarray(out)})
            return out

        monkeypatch.setattr(SelfAttentionGradCAM, "call", spy)


def test_sgc_masks_are_the_reference_valid_masks(network, monkeypatch):
    """Labeled: the padding mask; weak view: padding and CutOut (the reference's
    one valid mask of the unlabeled sample); both resized to the logits with
    TF1's default nearest resize, before the SGC resizes them to its own size."""
    trainer = make_trainer(network)
    sgc = SGCCalls(monkeypatch)
    batch = make_batch()
    trainer.compute_losses(as_tensors(batch))
    labeled, weak = sgc.calls
    np.testing.assert_array_equal(labeled["valid_mask"],
                                  np_nearest_floor(batch["labeled"]["valid_mask"], (9, 9)))
    np.testing.assert_array_equal(
        weak["valid_mask"], np_nearest_floor(batch["unlabeled"]["strong_valid_mask"], (9, 9)))
    assert labeled["training"] and weak["training"]  # the reference's is_training=True


@pytest.mark.parametrize("upsample_logits", [True, False])
def test_l_sa_is_the_labeled_sgc_cross_entropy_like_l_s(network, monkeypatch, upsample_logits):
    """L_sa: the SGC logits of the labeled batch upsampled bilinearly (aligned
    corners) to the crop, cross-entropy over non-ignored pixels (the reference's
    add_softmax_cross_entropy_loss_for_each_scale); labels downsampled instead
    with upsample_logits=False, as L_s."""
    trainer = make_trainer(network, upsample_logits=upsample_logits)
    sgc = SGCCalls(monkeypatch)
    batch = make_batch()
    _, terms, _ = trainer.compute_losses(as_tensors(batch))
    logits = sgc.calls[0]["logits"].astype(np.float64)
    assert logits.shape == (B, 3, 3, C)  # stride 16 of the 33 crop
    labels = batch["labeled"]["label"]

    def cross_entropy(logits, labels):
        labels = labels[..., 0]
        valid = labels != IGNORE
        log_p = np_log_softmax(logits)
        picked = np.take_along_axis(log_p, np.where(valid, labels, 0)[..., None], -1)[..., 0]
        return -(picked * valid).sum() / valid.sum()

    at_crop = cross_entropy(np_bilinear_align_corners(logits, (H, H)), labels)
    at_sgc = cross_entropy(logits, np_nearest_align_corners(labels, (3, 3)))
    assert abs(at_crop - at_sgc) > 1e-3 * at_crop  # the two choices differ here
    expected = at_crop if upsample_logits else at_sgc
    assert float(terms["loss_sgc"]) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("weakly", [False, True])
def test_no_attention_has_no_classification_loss_unless_weakly(network, weakly):
    """The reference trains the classifier on labeled masks only inside its
    attention branch; in weakly mode always (on the image-level labels)."""
    trainer = make_trainer(network, use_attention=False, pseudo_src="decoder", weakly=weakly)
    _, terms, _ = trainer.compute_losses(as_tensors(make_batch()))
    expected = {"loss_seg", "loss_consistency"} | ({"loss_cls"} if weakly else set())
    assert set(terms) == expected
    assert ("loss_cls" in trainer.trackers) == weakly  # logged only when computed


class FixedMaskHead(keras.layers.Layer):
    """Global mean, then in training mode a fixed per-image 'dropout' mask
    (keep 0.5), then a dense layer: DeepLab's Xception head with a known mask."""

    def __init__(self, num_classes, masks, **kwargs):
        super().__init__(**kwargs)
        self.masks = tf.constant(masks, tf.float32)
        self.dense = keras.layers.Dense(num_classes - 1, name="logits")

    def call(self, features, training=None):
        x = tf.reduce_mean(features, axis=[1, 2])
        if training:
            x = x * self.masks / 0.5
        return self.dense(x)


def np_normalised_cams(features, alpha, presence):
    cams = np.maximum(np.einsum("nhwk,nck->nhwc", features, alpha), 0)
    cams = cams * presence[:, None, None, :]
    maxima = cams.max(axis=(1, 2), keepdims=True)
    return np.divide(cams, maxima, out=np.zeros_like(cams), where=maxima > 0)


@pytest.mark.parametrize("head_mode", ["training", "inference"])
def test_labeled_cam_head(monkeypatch, head_mode):
    """labeled_cam_head='training' (the reference): the labeled CAM and L_x come
    from one training-mode head call (one dropout mask), the CAM's channel
    weights averaged over the batch; 'inference': the clean head per image."""
    keras.utils.set_random_seed(4)
    net = TinyNet(num_classes=C)
    masks = np.array([[1, 0] * 8, [1, 1, 0, 0] * 4], np.float32)  # 16 channels
    net.classification_head = FixedMaskHead(C, masks, name="tiny.cls")
    trainer = make_trainer(net, attention_dim=8, labeled_cam_head=head_mode)
    snapshot = Snapshot(trainer)
    batch = make_batch()
    labeled = batch["labeled"]
    features = net(labeled["image"], training=True)["endpoints"]["tiny/block3"].numpy()
    snapshot.restore()
    sgc = SGCCalls(monkeypatch)
    _, terms, _ = trainer.compute_losses(as_tensors(batch))

    kernel = net.classification_head.dense.kernel.numpy().astype(np.float64)  # [K, C-1]
    hw = features.shape[1] * features.shape[2]
    train_alpha = np.einsum("nk,kc->nck", masks / 0.5, kernel) / hw  # per image
    clean_alpha = np.broadcast_to(kernel.T / hw, train_alpha.shape)
    presence = labeled["class_presence"]
    if head_mode == "training":
        alpha = np.broadcast_to(train_alpha.mean(axis=0, keepdims=True), train_alpha.shape)
    else:
        alpha = clean_alpha
    expected = np_normalised_cams(features.astype(np.float64), alpha, presence)
    np.testing.assert_allclose(sgc.calls[0]["cam"], expected, rtol=1e-4, atol=1e-5)
    # The three candidates differ on this batch, so the test tells them apart.
    per_image = np_normalised_cams(features.astype(np.float64), train_alpha, presence)
    clean = np_normalised_cams(features.astype(np.float64), clean_alpha, presence)
    batch_mean = np_normalised_cams(
        features.astype(np.float64),
        np.broadcast_to(train_alpha.mean(axis=0, keepdims=True), train_alpha.shape), presence)
    for a, b in ((per_image, clean), (per_image, batch_mean), (clean, batch_mean)):
        assert np.abs(a - b).max() > 1e-2
    # L_x: the training-mode head (the fixed mask) in both modes.
    pooled = features.astype(np.float64).mean(axis=(1, 2)) * masks / 0.5
    logits = pooled @ kernel + net.classification_head.dense.bias.numpy()
    assert float(terms["loss_cls"]) == pytest.approx(
        np_sigmoid_cross_entropy(logits, presence), rel=1e-5)


def test_grad_cam_reads_the_moving_statistics_from_before_the_step(monkeypatch):
    """The reference applies batch-norm updates after all passes, so its
    inference-mode Grad-CAM pass sees the statistics the step started with.
    With momentum 0 every training-mode pass would overwrite them."""
    keras.utils.set_random_seed(5)
    net = TinyNet(num_classes=C)
    trainer = make_trainer(net, attention_dim=8)
    for layer in (net.bn1, net.bn2):
        layer.momentum = 0.0
    batch = make_batch()
    before = net(batch["unlabeled"]["weak_image"], training=False)["endpoints"]
    before = before["tiny/block3"].numpy()
    seen = []
    original = pseudoseg_lib.grad_cam_from_features

    def spy(head, features, image_labels):
        seen.append(np.asarray(features))
        return original(head, features, image_labels)

    monkeypatch.setattr(pseudoseg_lib, "grad_cam_from_features", spy)
    trainer.compute_losses(as_tensors(batch))
    after = net(batch["unlabeled"]["weak_image"], training=False)["endpoints"]["tiny/block3"]
    np.testing.assert_allclose(seen[-1], before, rtol=1e-5, atol=1e-6)
    assert np.abs(after.numpy() - before).max() > 1e-2  # the step did move the statistics


# -- fits -------------------------------------------------------------------------

class PerStepLogs(keras.callbacks.Callback):
    """Each step's own values (trackers reset before every step)."""

    def __init__(self):
        super().__init__()
        self.logs = []

    def on_train_batch_begin(self, batch, logs=None):
        self.model.reset_metrics()

    def on_train_batch_end(self, batch, logs=None):
        self.logs.append({k: float(v) for k, v in logs.items()})


def fit_fixed_batch(trainer, steps, learning_rate):
    """``steps`` steps of SGD with momentum on one batch; Grappler's graph
    optimisations are turned off for the run (they cost tens of seconds on
    this graph and change nothing that is checked)."""
    trainer.compile(optimizer=keras.optimizers.SGD(learning_rate, momentum=0.9))
    trainer.optimizer.build(trainer.trainable_variables)
    data = tf.data.Dataset.from_tensors(make_batch()).repeat()
    callback = PerStepLogs()
    options = tf.config.optimizer.get_experimental_options()
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    try:
        trainer.fit(data, steps_per_epoch=steps, epochs=1, verbose=0, callbacks=[callback])
    finally:
        tf.config.optimizer.set_experimental_options(
            {"disable_meta_optimizer": options.get("disable_meta_optimizer", False)})
    return callback.logs


def assert_every_loss_decreases(logs, terms=LOSS_TERMS):
    assert all(np.isfinite(v) for step in logs for v in step.values()), logs
    for name in terms + ("loss",):
        values = [step[name] for step in logs]
        first, last = np.mean(values[:3]), np.mean(values[-3:])
        assert last < first, (name, np.round(values, 4))


def test_fit_lowers_every_loss(network):
    keras.utils.set_random_seed(1)
    trainer = make_trainer(network, weight_decay=4e-5)
    logs = fit_fixed_batch(trainer, steps=15, learning_rate=0.03)
    assert len(logs) == 15
    assert_every_loss_decreases(logs)
    for name in ("acc_weak", "acc_pseudo", "acc_strong", "kept_ratio", "pixel_accuracy"):
        assert all(0.0 <= step[name] <= 1.0 for step in logs), name


def test_pseudoseg_wraps_a_tiny_non_deeplab_network():
    keras.utils.set_random_seed(2)
    net = TinyNet(num_classes=C)
    trainer = make_trainer(net, attention_dim=16, weight_decay=1e-4)
    assert trainer.gradcam_endpoint == "tiny/block3"
    assert trainer.hypercolumn_endpoints == ("tiny/block2", "tiny/block3")
    before = [v.numpy() for v in net.trainable_variables + trainer.sgc.trainable_variables]
    logs = fit_fixed_batch(trainer, steps=20, learning_rate=0.05)
    assert_every_loss_decreases(logs)
    after = [v.numpy() for v in net.trainable_variables + trainer.sgc.trainable_variables]
    assert all(np.any(a != b) for a, b in zip(after, before))
    # The SGC logits of the tiny net come at its CAM resolution (stride 8).
    outputs = net(make_batch()["labeled"]["image"], training=False)
    cams, _ = pseudoseg_lib.grad_cam_from_features(
        net.classification_head, outputs["endpoints"]["tiny/block3"], np.ones((B, C - 1)))
    sgc = trainer.sgc_logits(outputs, cams, make_batch()["labeled"]["valid_mask"], False)
    assert sgc.shape == (B, 5, 5, C) and np.isfinite(sgc.numpy()).all()
