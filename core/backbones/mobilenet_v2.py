"""MobileNetV2 (Sandler et al. 2018) as DeepLab uses it: depth multiplier 1,
up to ``layer_18`` (``expanded_conv_16``, 320 channels), no final 1x1 conv.

Stem ``Conv`` 3x3/2 (32) + BN + ReLU6, then 17 inverted residual units::

    r = ReLU6(BN(expand_1x1(x)))            (absent in the first unit)
    r = ReLU6(BN(depthwise_3x3(r, stride, rate)))
    r = BN(project_1x1(r))                   (linear bottleneck)
    out = x + r  if stride == 1 and depths match, else r

All convolutions use SAME padding (DeepLab's MobileNetV2 has no explicit
padding). Endpoints follow slim's names: ``MobilenetV2/layer_N`` (N = 1 for the
stem, 2..18 for the units) and ``MobilenetV2/layer_4/depthwise_output``, DeepLab's
low-level decoder feature (stride 4, 144 channels).
"""

from __future__ import annotations

import keras

from core.layers import AtrousSchedule, BatchNormConfig, conv_bn, depthwise_bn, keras_name

SCOPE = "MobilenetV2"
BATCH_NORM = dict(epsilon=1e-3, decay=0.997)
# slim mobilenet training_scope initialiser.
_INITIALIZER = dict(class_name="TruncatedNormal", config=dict(stddev=0.09))

# (output depth, stride, expansion) of expanded_conv, expanded_conv_1, ... _16.
_UNITS = (
    (16, 1, 1),
    (24, 2, 6), (24, 1, 6),
    (32, 2, 6), (32, 1, 6), (32, 1, 6),
    (64, 2, 6), (64, 1, 6), (64, 1, 6), (64, 1, 6),
    (96, 1, 6), (96, 1, 6), (96, 1, 6),
    (160, 2, 6), (160, 1, 6), (160, 1, 6),
    (320, 1, 6),
)

DECODER_ENDPOINT = f"{SCOPE}/layer_4/depthwise_output"
HYPERCOLUMN_ENDPOINTS = (f"{SCOPE}/layer_18", f"{SCOPE}/layer_17")
OUTPUT_ENDPOINT = f"{SCOPE}/layer_18"


def _make_divisible(value, divisor=8):
    """slim's rounding of expanded depths to a multiple of ``divisor``."""
    new_value = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return int(new_value)


def _initializer():
    return keras.initializers.get(_INITIALIZER)


def mobilenet_v2(images, output_stride: int, multi_grid=None, sync_batch_norm=False,
                batch_norm_decay=None):
    """Builds MobileNetV2 on preprocessed images.

    Returns ``(features, endpoints)``: ``layer_18`` (320 channels at
    ``output_stride``) and a dict from endpoint names to tensors.
    """
    if multi_grid:
        raise ValueError("multi_grid is not defined for mobilenet_v2 (DeepLab has none)")
    bn = BatchNormConfig.for_part(BATCH_NORM, sync_batch_norm, batch_norm_decay)
    schedule = AtrousSchedule(output_stride)
    endpoints = {}
    stride, rate = schedule.next_unit(2)
    x = conv_bn(images, 32, 3, f"{SCOPE}/Conv", bn, stride=stride, rate=rate,
                activation="relu6", explicit_padding=False,
                kernel_initializer=_initializer())
    endpoints[f"{SCOPE}/layer_1"] = x
    for i, (depth, unit_stride, expansion) in enumerate(_UNITS):
        scope = f"{SCOPE}/expanded_conv" + (f"_{i}" if i else "")
        layer = f"{SCOPE}/layer_{i + 2}"
        stride, rate = schedule.next_unit(unit_stride)
        depth_in = x.shape[-1]
        r = x
        if expansion != 1:
            r = conv_bn(r, _make_divisible(depth_in * expansion), 1, scope + "/expand", bn,
                        activation="relu6", kernel_initializer=_initializer())
        r = depthwise_bn(r, 3, scope + "/depthwise", bn, stride=stride, rate=rate,
                         activation="relu6", explicit_padding=False,
                         kernel_initializer=_initializer())
        if layer + "/depthwise_output" == DECODER_ENDPOINT:
            endpoints[DECODER_ENDPOINT] = r
        r = conv_bn(r, depth, 1, scope + "/project", bn, activation=None,
                    kernel_initializer=_initializer())
        if stride == 1 and depth_in == depth:
            r = keras.layers.Add(name=keras_name(scope + "/add"))([x, r])
        x = r
        endpoints[layer] = x
    schedule.check_reached()
    return x, endpoints
