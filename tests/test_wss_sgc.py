"""Self-attention Grad-CAM (wss/sgc.py) against a numpy float64 implementation
written from the method document (step 4) and the reference implementation's
masking (queries and keys; a padded query attends uniformly), using the
layer's own weights."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from wss.sgc import SelfAttentionGradCAM
from tests.numpy_reference import resize_bilinear_align_corners as np_resize_bilinear_align_corners
from tests.numpy_reference import resize_nearest_align_corners as np_resize_nearest_align_corners
from tests.numpy_reference import resize_nearest_floor as np_resize_nearest_floor

C = 5  # classes including background
D = 16  # attention dim (small for the test)
EPS = 1e-3  # slim.batch_norm's epsilon (the reference's SGC batch norm)


# -- numpy references -----------------------------------------------------------

def np_sgc(layer, features, cam, valid_mask=None, training=False):
    """SGC logits from the method document, float64, with ``layer``'s weights."""
    n, h, w, _ = cam.shape
    hyper = np.concatenate([np_resize_bilinear_align_corners(f, (h, w)) for f in features], -1)
    hyper = hyper.reshape(n, h * w, -1)
    wk = layer.key.kernel.numpy().astype(np.float64)[0, 0]
    wq = layer.query.kernel.numpy().astype(np.float64)[0, 0]
    d = wk.shape[-1]
    keys, queries = hyper @ wk, hyper @ wq
    scores = queries @ keys.transpose(0, 2, 1) / np.sqrt(d)  # [N, i, j]
    # The reference's float32 "- 1e9" makes every logit of a padded query
    # -1e9 when |score| < 32 (float32's spacing at 1e9 is 64): uniform.
    assert np.abs(scores).max() < 32
    if valid_mask is not None:
        valid = np_resize_nearest_floor(valid_mask, (h, w)).reshape(n, h * w) > 0
        scores = np.where(valid[:, None, :], scores, -np.inf)        # valid queries
        scores = np.where(valid[:, :, None], scores, 0.0)            # padded queries
    scores -= scores.max(axis=-1, keepdims=True)
    attention = np.exp(scores)
    attention /= attention.sum(axis=-1, keepdims=True)
    values = cam.astype(np.float64).reshape(n, h * w, -1)
    refined = values + attention @ values
    background = 2.0 - refined.max(axis=-1, keepdims=True)
    m = np.concatenate([background, refined], -1)
    z = m @ layer.classifier.kernel.numpy().astype(np.float64)[0, 0]  # [N, hw, C]
    beta = layer.norm.beta.numpy().astype(np.float64)
    gamma = (layer.norm.gamma.numpy().astype(np.float64) if layer.norm.gamma is not None
             else np.ones_like(beta))
    if training:
        mean, var = z.mean(axis=(0, 1)), z.var(axis=(0, 1))
    else:
        mean = layer.norm.moving_mean.numpy().astype(np.float64)
        var = layer.norm.moving_variance.numpy().astype(np.float64)
    out = (z - mean) / np.sqrt(var + EPS) * gamma + beta
    return out.reshape(n, h, w, -1), z


# -- fixtures -------------------------------------------------------------------

def random_inputs(seed=0, n=3):
    rng = np.random.default_rng(seed)
    features = [rng.normal(0, 1, (n, 7, 7, 6)).astype(np.float32),   # deeper-resolution map
                rng.normal(0, 1, (n, 4, 4, 5)).astype(np.float32)]   # CAM-resolution-ish map
    cam = rng.uniform(0, 1, (n, 5, 5, C - 1)).astype(np.float32)
    cam[:, :, :, 1] = 0.0  # an absent class
    # Image-size valid masks (17x17 -> CAM 5x5 picks rows/cols 0, 3, 6, 10, 13).
    valid = np.ones((n, 17, 17, 1), np.float32)
    valid[0, 9:] = 0.0           # rows 10, 13 of the CAM invalid
    valid[1, :, 13:] = 0.0       # column 13 invalid
    valid[2, 9:, 5:] = 0.0       # a corner
    return features, cam, valid


def make_layer(seed=0, attention_dim=D):
    keras.utils.set_random_seed(seed)
    layer = SelfAttentionGradCAM(C, attention_dim=attention_dim)
    features, cam, valid = random_inputs()
    layer.build([f.shape for f in features])
    rng = np.random.default_rng(seed + 100)
    # Non-trivial weights: sharp attention, mixing classifier, batch norm state.
    layer.key.kernel.assign(rng.normal(0, 0.8, layer.key.kernel.shape).astype(np.float32))
    layer.query.kernel.assign(rng.normal(0, 0.8, layer.query.kernel.shape).astype(np.float32))
    layer.classifier.kernel.assign(rng.normal(0, 1, layer.classifier.kernel.shape)
                                   .astype(np.float32))
    layer.norm.beta.assign(rng.normal(0, 1, (C,)).astype(np.float32))
    layer.norm.moving_mean.assign(rng.normal(0, 1, (C,)).astype(np.float32))
    layer.norm.moving_variance.assign(rng.uniform(0.2, 4.0, (C,)).astype(np.float32))
    return layer


# -- tests ----------------------------------------------------------------------

def test_structure_follows_the_interface():
    layer = make_layer()
    assert layer.key.filters == D and layer.query.filters == D
    assert not layer.key.use_bias and not layer.query.use_bias
    assert layer.key.kernel_size == (1, 1) and layer.query.kernel_size == (1, 1)
    assert layer.classifier.filters == C and not layer.classifier.use_bias
    assert layer.classifier.kernel.shape == (1, 1, C, C)
    assert isinstance(layer.norm, keras.layers.BatchNormalization)
    assert layer.norm.epsilon == pytest.approx(EPS)


def test_numpy_resizes_agree_with_tf1_semantics():
    """Sanity of the numpy helpers on hand-derived cases, and the floor resize
    (TF1's default nearest) against TensorFlow on sizes of this project."""
    from core.layers import resize_nearest_floor

    x = np.arange(5, dtype=np.float64).reshape(1, 1, 5, 1)
    # 5 -> 3: floor(0 * 5/3), floor(1 * 5/3), floor(2 * 5/3) = 0, 1, 3.
    np.testing.assert_array_equal(np_resize_nearest_floor(x, (1, 3))[0, 0, :, 0], [0, 1, 3])
    # 513 -> 129 (crop to stride-4 logits) picks floor(i * 3.9767), not 4 i.
    picks = np_resize_nearest_floor(np.arange(513.0).reshape(1, 1, 513, 1), (1, 129))[0, 0, :, 0]
    assert list(picks[:4]) == [0, 3, 7, 11] and picks[-1] == 509
    for in_size, out_size in ((513, 129), (129, 33), (65, 17), (17, 5), (33, 9), (5, 3), (3, 7)):
        rng = np.random.default_rng(in_size)
        x = rng.normal(size=(1, in_size, in_size + 2, 1)).astype(np.float32)
        ours = resize_nearest_floor(x, (out_size, out_size + 1)).numpy()
        np.testing.assert_array_equal(ours, np_resize_nearest_floor(x, (out_size, out_size + 1)))
    x = np.arange(3, dtype=np.float64).reshape(1, 1, 3, 1)  # 0 1 2
    np.testing.assert_allclose(np_resize_bilinear_align_corners(x, (1, 5))[0, 0, :, 0],
                               [0, 0.5, 1, 1.5, 2])
    x = np.arange(5, dtype=np.float64).reshape(1, 1, 5, 1)
    np.testing.assert_array_equal(np_resize_nearest_align_corners(x, (1, 3))[0, 0, :, 0],
                                  [0, 2, 4])
    np.testing.assert_array_equal(np_resize_nearest_align_corners(x[:, :, :4], (1, 3))[0, 0, :, 0],
                                  [0, 2, 3])  # 1.5 rounds half away from zero


def test_hypercolumn_is_an_align_corners_bilinear_resize():
    layer = make_layer()
    features, cam, _ = random_inputs()
    hyper = layer.hypercolumn(features, (5, 5)).numpy()
    expected = np.concatenate([np_resize_bilinear_align_corners(f, (5, 5)) for f in features], -1)
    np.testing.assert_allclose(hyper, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("masked", [True, False])
def test_inference_mode_equals_numpy(masked):
    layer = make_layer()
    features, cam, valid = random_inputs()
    out = layer(features, cam, valid_mask=valid if masked else None, training=False).numpy()
    expected, _ = np_sgc(layer, features, cam, valid if masked else None)
    assert out.shape == (3, 5, 5, C)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
    if masked:  # the mask changes the result, so the comparison covers it
        unmasked, _ = np_sgc(layer, features, cam, None)
        assert np.abs(unmasked - expected).max() > 1e-2


def test_training_mode_uses_batch_statistics_and_updates_moving_ones():
    layer = make_layer()
    features, cam, valid = random_inputs()
    moving_mean = layer.norm.moving_mean.numpy().astype(np.float64)
    moving_var = layer.norm.moving_variance.numpy().astype(np.float64)
    out = layer(features, cam, valid_mask=valid, training=True).numpy()
    expected, z = np_sgc(layer, features, cam, valid, training=True)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
    inference, _ = np_sgc(layer, features, cam, valid, training=False)
    assert np.abs(inference - expected).max() > 1e-2
    momentum = layer.norm.momentum
    np.testing.assert_allclose(layer.norm.moving_mean.numpy(),
                               momentum * moving_mean + (1 - momentum) * z.mean(axis=(0, 1)),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.norm.moving_variance.numpy(),
                               momentum * moving_var + (1 - momentum) * z.var(axis=(0, 1)),
                               rtol=1e-4, atol=1e-5)


def test_padded_positions_do_not_change_valid_outputs():
    """Features and CAM changed only where the (CAM-size) valid mask is 0: the
    outputs at valid positions stay put. Both hypercolumn maps are at the CAM's
    size here (like DeepLab's two stride-16 maps), so a padded feature pixel
    reaches no valid position through interpolation."""
    rng = np.random.default_rng(7)
    n = 3
    features = [rng.normal(0, 1, (n, 5, 5, 6)).astype(np.float32),
                rng.normal(0, 1, (n, 5, 5, 5)).astype(np.float32)]
    _, cam, valid = random_inputs()
    cam_valid = np_resize_nearest_floor(valid, (5, 5))[..., 0] > 0  # [N, 5, 5]
    assert (~cam_valid).any() and cam_valid.any()

    changed_features = [f.copy() for f in features]
    for f in changed_features:
        f[~cam_valid] = rng.normal(0, 5, f[~cam_valid].shape)
    changed_cam = cam.copy()
    changed_cam[~cam_valid] = rng.uniform(0, 1, changed_cam[~cam_valid].shape)

    layer = make_layer()  # kernels depend only on the channel counts (6 + 5)
    a = layer(features, cam, valid_mask=valid, training=False).numpy()
    b = layer(changed_features, changed_cam, valid_mask=valid, training=False).numpy()
    np.testing.assert_allclose(a[cam_valid], b[cam_valid], rtol=1e-5, atol=1e-5)
    assert np.abs(a[~cam_valid] - b[~cam_valid]).max() > 1e-2  # the change was real
    # Without the mask the padded positions leak into valid outputs.
    a = layer(features, cam, training=False).numpy()
    b = layer(changed_features, changed_cam, training=False).numpy()
    assert np.abs(a[cam_valid] - b[cam_valid]).max() > 1e-3


def test_padded_queries_attend_uniformly_and_valid_ones_only_to_valid_keys():
    layer = make_layer()
    features, _, valid = random_inputs()
    hyper = layer.hypercolumn(features, (5, 5))
    mask = np_resize_nearest_floor(valid, (5, 5)).reshape(3, 25) > 0
    weights = layer.attention(hyper, np_resize_nearest_floor(valid, (5, 5))).numpy()
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-6)
    for n in range(3):
        np.testing.assert_allclose(weights[n][~mask[n]], 1.0 / 25, rtol=1e-6)
        assert np.all(weights[n][mask[n]][:, ~mask[n]] == 0)
        assert weights[n][mask[n]].std(axis=-1).min() > 1e-3  # not uniform


def test_a_fresh_layer_builds_itself_when_called_like_a_keras_layer():
    features, cam, valid = random_inputs()
    fresh = SelfAttentionGradCAM(C, attention_dim=D)
    out = fresh(features, cam, valid_mask=valid, training=False)
    assert fresh.built and out.shape == (3, 5, 5, C)
    np.testing.assert_allclose(out.numpy(), np_sgc(fresh, features, cam, valid)[0],
                               rtol=1e-4, atol=1e-4)


def test_no_gradient_into_features_or_cam_but_into_own_weights():
    layer = make_layer()
    features, cam, valid = random_inputs()
    features = [tf.constant(f) for f in features]
    cam = tf.constant(cam)
    labels = np.random.default_rng(3).integers(0, C, (3, 5, 5)).astype(np.int32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(features)
        tape.watch(cam)
        logits = layer(features, cam, valid_mask=valid, training=True)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
    for g in tape.gradient(loss, features + [cam]):
        assert g is None or not np.any(g.numpy())
    gradients = tape.gradient(loss, layer.trainable_variables)
    names = [v.path for v in layer.trainable_variables]
    assert len(gradients) == 4, names  # key, query, classifier kernels and the BN offset
    for name, g in zip(names, gradients):
        assert g is not None and np.abs(g.numpy()).max() > 0, name
