"""Pseudo-label sources (wss/fusion.py) against numpy float64 written from the
method document (step 5 and 6)."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from wss import fusion
from tests.numpy_reference import resize_bilinear_align_corners as np_resize_bilinear_align_corners
from tests.numpy_reference import softmax as np_softmax

C = 4
REPO = Path(__file__).resolve().parents[1]


def np_sharpen(a, t):
    a = a ** (1.0 / t)
    return a / a.sum(axis=-1, keepdims=True)


def np_scale(*tensors):
    squares = sum((np.asarray(t, np.float64) ** 2).sum() for t in tensors)
    count = sum(np.asarray(t).size for t in tensors)
    return 1.0 / np.sqrt(squares / count + 1e-8)


def np_fusion(p, m, gamma=0.5, t=0.5, logit_norm=True):
    p = np.asarray(p, np.float64)
    m = np_resize_bilinear_align_corners(m, p.shape[1:3])
    if logit_norm:
        s = np_scale(p, m)
        p, m = p * s, m * s
    return np_sharpen(gamma * np_softmax(p) + (1 - gamma) * np_softmax(m), t)


def logits(seed=0):
    """Decoder logits [2, 9, 9, C] and SGC logits [2, 3, 3, C] on very different
    scales, and with images of very different scales within the batch, so that
    per-tensor or per-image normalisation would give a different answer."""
    rng = np.random.default_rng(seed)
    p = rng.normal(0, 1, (2, 9, 9, C))
    p[1] *= 6.0
    m = rng.normal(0, 1, (2, 3, 3, C)) * 0.2
    m[0] *= 10.0
    return p.astype(np.float32), m.astype(np.float32)


def test_numpy_bilinear_helper_hand_case():
    x = np.array([0.0, 3.0]).reshape(1, 1, 2, 1)
    np.testing.assert_allclose(np_resize_bilinear_align_corners(x, (1, 4))[0, 0, :, 0],
                               [0, 1, 2, 3])


def test_logit_scale_is_one_shared_rms_scalar():
    p, m = logits()
    m_up = fusion.resize_to(m, p).numpy()
    np.testing.assert_allclose(m_up, np_resize_bilinear_align_corners(m, (9, 9)),
                               rtol=1e-5, atol=1e-6)
    assert float(fusion.logit_scale(p, m_up)) == pytest.approx(np_scale(p, m_up), rel=1e-5)
    # Hand case: entries 3, 4 -> mean square 12.5.
    assert float(fusion.logit_scale(np.array([3.0], np.float32), np.array([[4.0]], np.float32))) \
        == pytest.approx(1.0 / np.sqrt(12.5 + 1e-8), rel=1e-6)
    # The 1e-8 keeps all-zero logits finite: 1 / sqrt(1e-8) = 1e4.
    assert float(fusion.logit_scale(np.zeros((2, 3), np.float32))) == pytest.approx(1e4, rel=1e-4)


@pytest.mark.parametrize("gamma,temperature", [(0.5, 0.5), (0.3, 0.5), (0.5, 1.0), (0.7, 0.25)])
def test_calibrated_fusion_equals_numpy(gamma, temperature):
    p, m = logits()
    out = fusion.calibrated_fusion(p, m, gamma=gamma, temperature=temperature).numpy()
    expected = np_fusion(p, m, gamma, temperature)
    assert out.shape == (2, 9, 9, C)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-6)


def test_shared_scalar_matters():
    """The alternatives (separate scalars per tensor, or per image) disagree with
    the output, so the comparison above does pin the shared batch scalar."""
    p, m = logits()
    out = fusion.calibrated_fusion(p, m).numpy()
    m_up = np_resize_bilinear_align_corners(m, (9, 9))
    separate = np_sharpen(
        0.5 * np_softmax(p * np_scale(p)) + 0.5 * np_softmax(m_up * np_scale(m_up)), 0.5)
    per_image = np.concatenate([np_fusion(p[i:i + 1], m[i:i + 1]) for i in range(2)])
    assert np.abs(out - separate).max() > 1e-2
    assert np.abs(out - per_image).max() > 1e-2
    assert np.abs(out - np_fusion(p, m, logit_norm=False)).max() > 1e-2


def test_logit_norm_off_equals_numpy():
    p, m = logits(1)
    out = fusion.calibrated_fusion(p, m, logit_norm=False).numpy()
    np.testing.assert_allclose(out, np_fusion(p, m, logit_norm=False), rtol=1e-4, atol=1e-6)


def test_sharpen():
    rng = np.random.default_rng(2)
    a = np_softmax(rng.normal(0, 1, (5, 7, C)))
    a32 = a.astype(np.float32)
    np.testing.assert_array_equal(np.asarray(fusion.sharpen(a32, 1.0)), a32)  # T = 1: identity
    for t in (0.5, 0.3, 2.0):
        out = fusion.sharpen(a32, t).numpy()
        np.testing.assert_allclose(out, np_sharpen(a, t), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(out.sum(-1), 1.0, atol=1e-5)
        np.testing.assert_array_equal(out.argmax(-1), a.argmax(-1))  # order preserved
    # T -> 0 approaches the one-hot of the argmax; T = 0.5 squares and renormalises.
    cold = fusion.sharpen(a32, 0.02).numpy()
    gaps = np.sort(a, -1)[..., -1] / np.sort(a, -1)[..., -2]
    ok = gaps > 1.2  # (1/1.2)^50 ~ 1e-4
    np.testing.assert_allclose(cold[ok], np.eye(C)[a.argmax(-1)][ok], atol=1e-3)
    hand = fusion.sharpen(np.array([[0.6, 0.2, 0.2]], np.float32), 0.5).numpy()
    np.testing.assert_allclose(hand, [[0.36 / 0.44, 0.04 / 0.44, 0.04 / 0.44]], rtol=1e-6)
    # Higher temperature flattens.
    assert fusion.sharpen(a32, 2.0).numpy().max(-1).mean() < a.max(-1).mean()


def test_pseudo_sources():
    p, m = logits(3)
    m_up = np_resize_bilinear_align_corners(m, (9, 9))
    np.testing.assert_allclose(fusion.pseudo_label("decoder", p, temperature=0.5).numpy(),
                               np_sharpen(np_softmax(p.astype(np.float64)), 0.5),
                               rtol=1e-4, atol=1e-6)
    # 'att' (SGC only): the SGC logits resized to the decoder's size, softmax, sharpen
    # (no logit normalisation: a single source has nothing to calibrate against).
    np.testing.assert_allclose(fusion.pseudo_label("att", p, m, temperature=0.5).numpy(),
                               np_sharpen(np_softmax(m_up), 0.5), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(fusion.pseudo_label("avg", p, m, gamma=0.3, temperature=0.4,
                                                   logit_norm=True).numpy(),
                               np_fusion(p, m, 0.3, 0.4), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(fusion.pseudo_label("avg", p, m, logit_norm=False).numpy(),
                               np_fusion(p, m, logit_norm=False), rtol=1e-4, atol=1e-6)
    # The decoder source ignores SGC logits entirely.
    np.testing.assert_array_equal(fusion.pseudo_label("decoder", p, m).numpy(),
                                  fusion.pseudo_label("decoder", p, None).numpy())
    with pytest.raises(ValueError):
        fusion.pseudo_label("att", p, None)
    with pytest.raises(ValueError):
        fusion.pseudo_label("avg", p, None)
    with pytest.raises(ValueError):
        fusion.pseudo_label("mean", p, m)


def test_hard_labels_and_confidence_mask():
    rng = np.random.default_rng(4)
    probabilities = np_softmax(rng.normal(0, 2, (2, 5, 5, C))).astype(np.float32)
    hard = fusion.hard_pseudo_label(probabilities).numpy()
    np.testing.assert_array_equal(hard, np.eye(C, dtype=np.float32)[probabilities.argmax(-1)])

    confidence = probabilities.max(-1, keepdims=True)
    threshold = float(np.median(confidence))
    mask = fusion.confidence_mask(probabilities, threshold).numpy()
    np.testing.assert_array_equal(mask, (confidence >= threshold).astype(np.float32))
    assert 0 < mask.mean() < 1
    np.testing.assert_array_equal(fusion.confidence_mask(probabilities, 0.0).numpy(),
                                  np.ones_like(confidence))
    # The threshold is inclusive (exactly representable values).
    exact = np.array([[0.5, 0.25, 0.25, 0.0], [0.25, 0.25, 0.25, 0.25]], np.float32)
    np.testing.assert_array_equal(fusion.confidence_mask(exact, 0.5).numpy(), [[1.0], [0.0]])


def test_no_gradient_through_pseudo_labels():
    p, m = (tf.constant(x) for x in logits())
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([p, m])
        outs = [fusion.calibrated_fusion(p, m), fusion.pseudo_label("att", p, m),
                fusion.pseudo_label("decoder", p)]
        total = tf.add_n([tf.reduce_sum(o * tf.range(C, dtype=tf.float32)) for o in outs])
    for g in tape.gradient(total, [p, m]):
        assert g is None or not np.any(g.numpy())


MIRRORED_SCRIPT = textwrap.dedent("""
    import json, os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    sys.path.insert(0, sys.argv[1])
    from core.distribute import split_cpu
    split_cpu(2)  # before TensorFlow initialises its devices
    import numpy as np
    import tensorflow as tf
    from wss import fusion

    p = np.array(json.loads(sys.argv[2]), np.float32)
    m = np.array(json.loads(sys.argv[3]), np.float32)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2

    def local(context):  # replica r gets image r of the global batch of 2
        r = context.replica_id_in_sync_group
        return tf.constant(p)[r:r + 1], tf.constant(m)[r:r + 1]

    values = strategy.experimental_distribute_values_from_function(local)

    @tf.function
    def step(values):
        def fn(pair):
            lp, lm = pair
            scale = fusion.logit_scale(lp, fusion.resize_to(lm, lp))
            return scale, fusion.calibrated_fusion(lp, lm)
        return strategy.run(fn, args=(values,))

    scales, fused = step(values)
    print(json.dumps({
        "scales": [float(s.numpy()) for s in strategy.experimental_local_results(scales)],
        "fused": np.concatenate([f.numpy() for f in strategy.experimental_local_results(fused)])
                   .tolist()}))
""")


def test_logit_scale_uses_the_global_batch_under_mirrored_strategy():
    p, m = logits(5)
    result = subprocess.run(
        [sys.executable, "-c", MIRRORED_SCRIPT, str(REPO), json.dumps(p.tolist()),
         json.dumps(m.tolist())],
        capture_output=True, text=True, timeout=300, cwd=str(REPO))
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    m_up = np_resize_bilinear_align_corners(m, (9, 9))
    global_scale = np_scale(p, m_up)
    per_replica = [np_scale(p[i], m_up[i]) for i in range(2)]
    assert abs(per_replica[0] - global_scale) / global_scale > 0.1  # a real difference
    for s in out["scales"]:
        assert s == pytest.approx(global_scale, rel=1e-5)
    np.testing.assert_allclose(np.array(out["fused"]), np_fusion(p, m), rtol=1e-4, atol=1e-6)
