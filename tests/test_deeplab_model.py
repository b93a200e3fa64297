"""DeepLabv3+ structure: shapes, strides, rates, padding, resizes and parameter counts.

Expected values come from docs (shared/docs/deeplab-architecture.md) and from
independent numpy / raw-TF computations, never from the model itself.
"""

import functools

import keras
import numpy as np
import pytest
import tensorflow as tf

from core import layers as layers_lib
from core.deeplab import MODEL_VARIANTS, backbone_spec, build_model
from tests.numpy_reference import resize_bilinear_align_corners

# Trainable parameters of the segmentation network (21 classes) from the
# architecture document's table: backbone, ASPP, decoder, total.
PARAMETER_TABLE = {
    "xception_65": (37_867_312, 3_019_776, 162_928, 41_055_413),
    "resnet_v1_50_beta": (23_631_808, 3_019_776, 162_928, 26_819_909),
    "resnet_v1_101_beta": (42_623_936, 3_019_776, 162_928, 45_812_037),
    "mobilenet_v2": (1_811_712, 296_448, 0, 2_113_557),
}

# (endpoint suffix, stride at OS16, stride at OS8, channels) per variant.
ENDPOINTS = {
    "xception_65": [
        ("xception_65/entry_flow/conv1_1", 2, 2, 32),
        ("xception_65/entry_flow/block1", 4, 4, 128),
        ("xception_65/entry_flow/block2", 8, 8, 256),
        ("xception_65/entry_flow/block3", 16, 8, 728),
        ("xception_65/middle_flow/block1", 16, 8, 728),
        ("xception_65/exit_flow/block1", 16, 8, 1024),
        ("xception_65/exit_flow/block2", 16, 8, 2048),
        ("xception_65/entry_flow/block2/unit_1/xception_module/separable_conv2_pointwise",
         4, 4, 256),
    ],
    "resnet_v1_50_beta": [
        ("resnet_v1_50/conv1_3", 2, 2, 128),
        ("resnet_v1_50/block1", 8, 8, 256),
        ("resnet_v1_50/block2", 16, 8, 512),
        ("resnet_v1_50/block3", 16, 8, 1024),
        ("resnet_v1_50/block4", 16, 8, 2048),
        ("resnet_v1_50/block1/unit_2/bottleneck_v1/conv3", 4, 4, 256),
    ],
    "resnet_v1_101_beta": [
        ("resnet_v1_101/block1", 8, 8, 256),
        ("resnet_v1_101/block3", 16, 8, 1024),
        ("resnet_v1_101/block4", 16, 8, 2048),
        ("resnet_v1_101/block1/unit_2/bottleneck_v1/conv3", 4, 4, 256),
    ],
    "mobilenet_v2": [
        ("MobilenetV2/layer_1", 2, 2, 32),
        ("MobilenetV2/layer_4/depthwise_output", 4, 4, 144),
        ("MobilenetV2/layer_7", 8, 8, 32),
        ("MobilenetV2/layer_14", 16, 8, 96),
        ("MobilenetV2/layer_18", 16, 8, 320),
    ],
}


def _size_at_stride(size, stride):
    # DeepLab's feature map sizes with explicit / SAME padding: (n - 1) // s + 1.
    return (size - 1) // stride + 1


@functools.lru_cache(maxsize=None)
def _model(variant, output_stride, **kwargs):
    return build_model(variant, 21, output_stride=output_stride,
                       atrous_rates=(6, 12, 18) if output_stride == 16 else (12, 24, 36))


@pytest.mark.parametrize("variant", MODEL_VARIANTS)
@pytest.mark.parametrize("output_stride", [16, 8])
def test_output_and_endpoint_shapes(variant, output_stride):
    model = _model(variant, output_stride)
    for height, width in ((129, 129), (96, 128)):
        images = np.random.default_rng(0).uniform(0, 255, (1, height, width, 3))
        out = model(images.astype(np.float32), training=False)
        assert tuple(out["logits"].shape) == (
            1, _size_at_stride(height, 4), _size_at_stride(width, 4), 21)
        assert tuple(out["cls_logits"].shape) == (1, 20)
        for name, stride16, stride8, channels in ENDPOINTS[variant]:
            stride = stride16 if output_stride == 16 else stride8
            assert tuple(out["endpoints"][name].shape) == (
                1, _size_at_stride(height, stride), _size_at_stride(width, stride), channels
            ), name
        spec = backbone_spec(variant)
        for name in (spec.output_endpoint, spec.decoder_endpoint, *spec.hypercolumn_endpoints):
            assert name in out["endpoints"]


def test_training_mode_runs_and_differs_from_inference():
    model = build_model("mobilenet_v2", 5, atrous_rates=(6, 12, 18))
    images = np.random.default_rng(1).uniform(0, 255, (2, 65, 65, 3)).astype(np.float32)
    train_out = model(images, training=True)
    infer_out = model(images, training=False)
    assert train_out["logits"].shape == infer_out["logits"].shape == (2, 17, 17, 5)
    # Batch statistics instead of the (fresh) moving statistics.
    assert not np.allclose(train_out["logits"], infer_out["logits"])


def test_no_decoder_and_no_atrous_branches_give_logits_at_output_stride():
    model = build_model("mobilenet_v2", 21, atrous_rates=None, decoder_output_stride=None)
    out = model(np.zeros((1, 65, 97, 3), np.float32), training=False)
    assert tuple(out["logits"].shape) == (1, 5, 7, 21)
    names = {layer.name for layer in model.layers}
    assert "concat_projection" in names and "aspp1_depthwise" not in names
    assert not any(n.startswith("decoder.") for n in names)


@pytest.mark.parametrize("variant", MODEL_VARIANTS)
def test_parameter_counts_match_the_architecture_table(variant):
    kwargs = (dict(atrous_rates=None, decoder_output_stride=None)
              if variant == "mobilenet_v2" else {})
    model = build_model(variant, 21, **kwargs)
    spec = backbone_spec(variant)

    def count(predicate):
        return sum(int(np.prod(w.shape)) for w in model.trainable_weights if predicate(w.path))

    scope = spec.scope + "."
    cls = spec.cls_scope.replace("/", ".")
    backbone = count(lambda p: p.startswith(scope) and not p.startswith(cls))
    aspp = count(lambda p: p.split("/")[0].split(".")[0] in
                 ("image_pooling", "aspp0", "aspp1_depthwise", "aspp1_pointwise",
                  "aspp2_depthwise", "aspp2_pointwise", "aspp3_depthwise",
                  "aspp3_pointwise", "concat_projection"))
    decoder = count(lambda p: p.startswith("decoder."))
    total = count(lambda p: not p.startswith(cls))
    assert (backbone, aspp, decoder, total) == PARAMETER_TABLE[variant]
    # PseudoSeg's head: (channels of the backbone output) x 20 + 20.
    head = count(lambda p: p.startswith(cls))
    assert head == model.get_layer(cls).kernel.shape[2] * 20 + 20


def _dilation(model, name):
    return model.get_layer(name).dilation_rate[0]


def _stride(model, name):
    return model.get_layer(name).strides[0]


def test_xception_strides_and_rates_follow_output_stride():
    os16 = build_model("xception_65", 21, output_stride=16, multi_grid=(1, 2, 4))
    block = "xception_65.{}.unit_1.xception_module.separable_conv{}_depthwise"
    assert _stride(os16, block.format("entry_flow.block3", 3)) == 2
    assert _stride(os16, block.format("exit_flow.block1", 3)) == 1
    assert _dilation(os16, block.format("exit_flow.block1", 3)) == 1  # keeps the old rate
    assert [_dilation(os16, block.format("exit_flow.block2", i)) for i in (1, 2, 3)] == [2, 4, 8]
    os8 = build_model("xception_65", 21, output_stride=8)
    assert _stride(os8, block.format("entry_flow.block3", 3)) == 1
    assert _dilation(os8, block.format("entry_flow.block3", 3)) == 1
    assert _dilation(os8, "xception_65.middle_flow.block1.unit_16.xception_module."
                          "separable_conv1_depthwise") == 2
    assert _dilation(os8, block.format("exit_flow.block1", 3)) == 2
    assert _dilation(os8, block.format("exit_flow.block2", 1)) == 4


def test_resnet_strides_sit_on_the_last_unit_and_rates_follow_output_stride():
    os16 = build_model("resnet_v1_50_beta", 21, output_stride=16, multi_grid=(1, 2, 4))
    unit = "resnet_v1_50.{}.unit_{}.bottleneck_v1.conv2"
    assert _stride(os16, unit.format("block1", 1)) == 1
    assert _stride(os16, unit.format("block1", 3)) == 2
    assert _stride(os16, unit.format("block2", 4)) == 2
    assert _stride(os16, unit.format("block3", 6)) == 1
    assert _dilation(os16, unit.format("block3", 6)) == 1
    assert [_dilation(os16, unit.format("block4", u)) for u in (1, 2, 3)] == [2, 4, 8]
    os8 = build_model("resnet_v1_50_beta", 21, output_stride=8)
    assert _stride(os8, unit.format("block2", 4)) == 1
    assert _dilation(os8, unit.format("block3", 1)) == 2
    assert [_dilation(os8, unit.format("block4", u)) for u in (1, 2, 3)] == [4, 4, 4]


def test_batch_norm_epsilons_per_part():
    model = build_model("resnet_v1_50_beta", 21)
    assert model.get_layer("resnet_v1_50.conv1_1.BatchNorm").epsilon == 1e-5
    assert model.get_layer("resnet_v1_50.conv1_1.BatchNorm").momentum == 0.95
    assert model.get_layer("aspp0.BatchNorm").epsilon == 1e-5
    assert model.get_layer("aspp0.BatchNorm").momentum == 0.9997
    model = build_model("mobilenet_v2", 21)
    assert model.get_layer("MobilenetV2.Conv.BatchNorm").epsilon == 1e-3
    assert model.get_layer("MobilenetV2.Conv.BatchNorm").momentum == 0.997


@pytest.mark.parametrize("size", [8, 9])
def test_strided_conv_pads_explicitly_and_symmetrically(size):
    """conv_bn with stride 2 == VALID conv on the input zero-padded by
    (k - 1) // 2 before and the rest after, computed with raw tf.nn ops."""
    rng = np.random.default_rng(size)
    x = rng.normal(size=(1, size, size, 2)).astype(np.float32)
    inputs = keras.Input((None, None, 2))
    bn = layers_lib.BatchNormConfig(epsilon=1e-3, decay=0.9)
    net = keras.Model(inputs, layers_lib.conv_bn(inputs, 3, 3, "t/conv", bn, stride=2,
                                                 activation=None))
    kernel = rng.normal(size=(3, 3, 2, 3)).astype(np.float32)
    net.get_layer("t.conv").kernel.assign(kernel)
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    # A fresh batch norm in inference mode divides by sqrt(1 + eps).
    expected = tf.nn.conv2d(padded, kernel, strides=2, padding="VALID").numpy()
    expected /= np.sqrt(1 + 1e-3)
    np.testing.assert_allclose(net(x, training=False).numpy(), expected, rtol=1e-5, atol=1e-5)
    same = tf.nn.conv2d(x, kernel, strides=2, padding="SAME").numpy() / np.sqrt(1 + 1e-3)
    # SAME pads only at the end on even sizes: it must differ there, agree on odd.
    assert np.allclose(same, expected, atol=1e-5) == (size % 2 == 1)


def test_fixed_padding_of_a_dilated_kernel():
    x = np.ones((1, 4, 4, 1), np.float32)
    inputs = keras.Input((None, None, 1))
    padded = keras.Model(inputs, layers_lib.fixed_padding(inputs, 3, 2, "t"))(x).numpy()
    # k_eff = 5, total 4: two rows/columns of zeros on each side.
    assert padded.shape == (1, 8, 8, 1)
    assert padded[0, 2:6, 2:6, 0].sum() == 16 and padded.sum() == 16


def test_resize_is_bilinear_with_aligned_corners():
    image = np.random.default_rng(2).normal(size=(5, 7, 3)).astype(np.float32)
    resized = layers_lib.resize_bilinear_align_corners(image[None], (17, 9)).numpy()[0]
    np.testing.assert_allclose(resized, resize_bilinear_align_corners(image[None], (17, 9))[0],
                               atol=1e-5)
    # Corners land exactly on corners.
    np.testing.assert_allclose(resized[-1, -1], image[-1, -1], atol=1e-6)


def test_decoder_resizes_to_stride_four_size_of_the_input():
    model = build_model("resnet_v1_50_beta", 3, output_stride=16)
    out = model(np.zeros((1, 70, 45, 3), np.float32), training=False)
    assert tuple(out["logits"].shape[1:3]) == ((70 - 1) // 4 + 1, (45 - 1) // 4 + 1)


def test_preprocessing_is_inside_the_model():
    model = build_model("mobilenet_v2", 3)
    x = np.array([[[[0.0, 127.5, 255.0]]]], np.float32)
    np.testing.assert_allclose(model.get_layer("preprocess")(x).numpy(),
                               [[[[-1.0, 0.0, 1.0]]]], atol=1e-6)


def test_classification_head_is_gap_plus_linear_and_differentiable_wrt_features():
    """The head's gradient w.r.t. the backbone output is W_c / (h * w) everywhere,
    the closed form Grad-CAM relies on; computing it needs the endpoint tensor
    to be the one the head consumed."""
    model = build_model("mobilenet_v2", 4)
    spec = model.backbone_spec
    images = np.random.default_rng(3).uniform(0, 255, (2, 64, 80, 3)).astype(np.float32)
    with tf.GradientTape() as tape:
        out = model(images, training=False)
        features = out["endpoints"][spec.output_endpoint]
        target = out["cls_logits"][:, 1]
    grad = tape.gradient(target, features)
    assert grad is not None
    head = model.get_layer(spec.cls_scope.replace("/", "."))
    h, w = features.shape[1:3]
    expected = np.broadcast_to(head.kernel.numpy()[0, 0, :, 1] / (h * w), grad.shape)
    np.testing.assert_allclose(grad.numpy(), expected, rtol=1e-5, atol=1e-8)
    mean = features.numpy().mean(axis=(1, 2))
    np.testing.assert_allclose(
        out["cls_logits"].numpy(), mean @ head.kernel.numpy()[0, 0] + head.bias.numpy(),
        rtol=1e-4, atol=1e-4)


def test_bad_arguments_fail_clearly():
    with pytest.raises(ValueError, match="unknown model_variant 'resnet_v1_18'"):
        build_model("resnet_v1_18", 21)
    with pytest.raises(ValueError, match="output_stride must be one of"):
        build_model("mobilenet_v2", 21, output_stride=12)
    with pytest.raises(ValueError, match="decoder_output_stride"):
        build_model("mobilenet_v2", 21, decoder_output_stride=8)
    with pytest.raises(ValueError, match="multi_grid"):
        build_model("xception_65", 21, multi_grid=(1, 2))
