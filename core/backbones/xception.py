"""Xception-65, DeepLab's aligned variant (Chen et al. 2018, Fig. 4).

Stem: ``entry_flow/conv1_1`` (3x3/2, 32) and ``conv1_2`` (3x3, 64), BN+ReLU.
Then 21 Xception modules in six blocks. A module is three separable convs;
the stride (if any) sits on ``separable_conv3``'s depthwise and on the 1x1
shortcut::

    entry flow, middle flow, exit_flow/block1:
        r = x
        for i in 1..3:  r = BN(pointwise_i(BN(depthwise_i(ReLU(r)))))
        out = r + shortcut(x)        (1x1 conv + BN, or identity in the middle flow)
    exit_flow/block2:
        r = x
        for i in 1..3:  r = ReLU(BN(pointwise_i(ReLU(BN(depthwise_i(r))))))
        out = r                      (no shortcut)

Endpoints (DeepLab's names): the block outputs (pre-ReLU sums, post-ReLU for
exit_flow/block2), the stem convs, and the decoder's low-level feature
``entry_flow/block2/unit_1/xception_module/separable_conv2_pointwise`` (its BN
output, stride 4, 256 channels).
"""

from __future__ import annotations

import keras

from core.layers import (
    AtrousSchedule,
    BatchNormConfig,
    conv_bn,
    keras_name,
    split_separable_conv_bn,
)

SCOPE = "xception_65"
BATCH_NORM = dict(epsilon=1e-3, decay=0.9997)
# DeepLab's xception_arg_scope initialiser.
_INITIALIZER = dict(class_name="TruncatedNormal", config=dict(stddev=0.09))

# (block scope, depths of the three separable convs, skip type,
#  activation inside the separable convs, number of units, stride)
_BLOCKS = (
    ("entry_flow/block1", (128, 128, 128), "conv", False, 1, 2),
    ("entry_flow/block2", (256, 256, 256), "conv", False, 1, 2),
    ("entry_flow/block3", (728, 728, 728), "conv", False, 1, 2),
    ("middle_flow/block1", (728, 728, 728), "sum", False, 16, 1),
    ("exit_flow/block1", (728, 1024, 1024), "conv", False, 1, 2),
    ("exit_flow/block2", (1536, 1536, 2048), "none", True, 1, 1),
)

DECODER_ENDPOINT = (
    f"{SCOPE}/entry_flow/block2/unit_1/xception_module/separable_conv2_pointwise"
)
HYPERCOLUMN_ENDPOINTS = (f"{SCOPE}/exit_flow/block2", f"{SCOPE}/exit_flow/block1")
OUTPUT_ENDPOINT = f"{SCOPE}/exit_flow/block2"


def _initializer():
    return keras.initializers.get(_INITIALIZER)


def _xception_module(
    x, scope, depths, skip, activation_inside, stride, rate, unit_rates, bn, endpoints
):
    residual = x
    for i in range(3):
        conv_scope = f"{scope}/separable_conv{i + 1}"
        if activation_inside:
            activation = "relu"
        else:
            activation = None
            residual = keras.layers.ReLU(name=keras_name(conv_scope + "/input_relu"))(
                residual
            )
        residual = split_separable_conv_bn(
            residual,
            depths[i],
            conv_scope,
            bn,
            rate=rate * unit_rates[i],
            stride=stride if i == 2 else 1,
            activation=activation,
            depthwise_initializer=_initializer(),
            pointwise_initializer=_initializer(),
        )
        if conv_scope + "_pointwise" == DECODER_ENDPOINT:
            endpoints[DECODER_ENDPOINT] = residual
    if skip == "conv":
        shortcut = conv_bn(
            x,
            depths[-1],
            1,
            scope + "/shortcut",
            bn,
            stride=stride,
            activation=None,
            kernel_initializer=_initializer(),
        )
        out = keras.layers.Add(name=keras_name(scope + "/add"))([residual, shortcut])
    elif skip == "sum":
        out = keras.layers.Add(name=keras_name(scope + "/add"))([residual, x])
    else:
        out = residual
    return out


def xception_65(images, output_stride: int, multi_grid=None, sync_batch_norm=False,
                batch_norm_decay=None):
    """Builds Xception-65 on preprocessed images.

    Returns ``(features, endpoints)``: the last feature map (2048 channels at
    ``output_stride``) and a dict from DeepLab endpoint names to tensors.
    """
    bn = BatchNormConfig.for_part(BATCH_NORM, sync_batch_norm, batch_norm_decay)
    unit_rates_exit2 = tuple(multi_grid) if multi_grid else (1, 1, 1)
    if len(unit_rates_exit2) != 3:
        raise ValueError(f"multi_grid must have 3 entries for Xception, got {multi_grid}")
    endpoints = {}
    x = conv_bn(images, 32, 3, f"{SCOPE}/entry_flow/conv1_1", bn, stride=2,
                kernel_initializer=_initializer())
    endpoints[f"{SCOPE}/entry_flow/conv1_1"] = x
    x = conv_bn(x, 64, 3, f"{SCOPE}/entry_flow/conv1_2", bn,
                kernel_initializer=_initializer())
    endpoints[f"{SCOPE}/entry_flow/conv1_2"] = x
    schedule = AtrousSchedule(output_stride, initial_stride=2)
    for block, depths, skip, activation_inside, num_units, block_stride in _BLOCKS:
        unit_rates = unit_rates_exit2 if block == "exit_flow/block2" else (1, 1, 1)
        for unit in range(num_units):
            stride, rate = schedule.next_unit(block_stride)
            scope = f"{SCOPE}/{block}/unit_{unit + 1}/xception_module"
            x = _xception_module(x, scope, depths, skip, activation_inside, stride,
                                 rate, unit_rates, bn, endpoints)
        endpoints[f"{SCOPE}/{block}"] = x
    schedule.check_reached()
    return x, endpoints
