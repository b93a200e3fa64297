"""ResNet-50/101 v1 "beta" as DeepLab builds it (He et al. 2016, with the
Inception-style stem of three 3x3 convolutions).

Stem: ``conv1_1`` 3x3/2 (64), ``conv1_2`` 3x3 (64), ``conv1_3`` 3x3 (128), each
BN+ReLU, then ``pool1`` 3x3/2 max pool (SAME). Blocks of bottleneck units::

    r = BN(conv1_1x1(x)); r = ReLU(r)
    r = BN(conv2_3x3(r, stride, rate)); r = ReLU(r)
    r = BN(conv3_1x1(r))
    out = ReLU(shortcut(x) + r)

``shortcut`` is a 1x1 conv + BN where the depth changes (unit 1 of each block),
else ``x`` subsampled by the unit's stride. The stride of a block sits on its
LAST unit. ``block4`` has stride 1 and unit rates ``multi_grid``.

Endpoints: the stem convs, ``block1`` .. ``block4`` (post-ReLU), and the
decoder's low-level feature ``block1/unit_2/bottleneck_v1/conv3`` (BN output,
before the residual add, stride 4, 256 channels).
"""

from __future__ import annotations

import keras

from core.layers import AtrousSchedule, BatchNormConfig, conv_bn, keras_name

BATCH_NORM = dict(epsilon=1e-5, decay=0.95)
# slim's variance_scaling_initializer (factor 2, fan in, truncated normal).
_INITIALIZER = dict(
    class_name="VarianceScaling",
    config=dict(scale=2.0, mode="fan_in", distribution="truncated_normal"),
)

UNITS = {"resnet_v1_50_beta": (3, 4, 6, 3), "resnet_v1_101_beta": (3, 4, 23, 3)}


def scope_of(variant: str) -> str:
    """Checkpoint scope of a variant: ``resnet_v1_50_beta`` -> ``resnet_v1_50``."""
    return variant[: -len("_beta")]


def decoder_endpoint(variant: str) -> str:
    return f"{scope_of(variant)}/block1/unit_2/bottleneck_v1/conv3"


def hypercolumn_endpoints(variant: str) -> tuple[str, str]:
    return (f"{scope_of(variant)}/block4", f"{scope_of(variant)}/block3")


def output_endpoint(variant: str) -> str:
    return f"{scope_of(variant)}/block4"


def _initializer():
    return keras.initializers.get(_INITIALIZER)


def _bottleneck(x, scope, depth, depth_bottleneck, stride, rate, bn, endpoints):
    depth_in = x.shape[-1]
    if depth == depth_in:
        shortcut = x
        if stride > 1:
            # slim's subsample: a 1x1 max pool with the unit's stride.
            shortcut = keras.layers.MaxPooling2D(
                1, strides=stride, name=keras_name(scope + "/shortcut_subsample")
            )(x)
    else:
        shortcut = conv_bn(x, depth, 1, scope + "/shortcut", bn, stride=stride,
                           activation=None, kernel_initializer=_initializer())
    r = conv_bn(x, depth_bottleneck, 1, scope + "/conv1", bn,
                kernel_initializer=_initializer())
    r = conv_bn(r, depth_bottleneck, 3, scope + "/conv2", bn, stride=stride, rate=rate,
                kernel_initializer=_initializer())
    r = conv_bn(r, depth, 1, scope + "/conv3", bn, activation=None,
                kernel_initializer=_initializer())
    endpoints[scope + "/conv3"] = r
    out = keras.layers.Add(name=keras_name(scope + "/add"))([shortcut, r])
    return keras.layers.ReLU(name=keras_name(scope + "/relu"))(out)


def resnet_v1_beta(images, variant: str, output_stride: int, multi_grid=None,
                   sync_batch_norm=False,
                batch_norm_decay=None):
    """Builds ResNet-50/101 v1 beta on preprocessed images.

    Returns ``(features, endpoints)``: the ``block4`` output (2048 channels at
    ``output_stride``) and a dict from DeepLab endpoint names to tensors.
    """
    if variant not in UNITS:
        raise ValueError(f"unknown ResNet variant {variant!r}; expected one of {sorted(UNITS)}")
    scope = scope_of(variant)
    bn = BatchNormConfig.for_part(BATCH_NORM, sync_batch_norm, batch_norm_decay)
    multi_grid = tuple(multi_grid) if multi_grid else (1, 1, 1)
    endpoints = {}
    all_endpoints = {}
    x = images
    for name, filters, stride in (("conv1_1", 64, 2), ("conv1_2", 64, 1), ("conv1_3", 128, 1)):
        x = conv_bn(x, filters, 3, f"{scope}/{name}", bn, stride=stride,
                    kernel_initializer=_initializer())
        endpoints[f"{scope}/{name}"] = x
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same",
                                  name=keras_name(f"{scope}/pool1"))(x)
    blocks = [
        (f"block{b + 1}", 64 * 2**b, [1] * (n - 1) + [2], [1] * n)
        for b, n in enumerate(UNITS[variant][:3])
    ]
    blocks.append(("block4", 512, [1] * len(multi_grid), list(multi_grid)))
    schedule = AtrousSchedule(output_stride, initial_stride=4)
    for block, base_depth, unit_strides, unit_rates in blocks:
        for u, (unit_stride, unit_rate) in enumerate(zip(unit_strides, unit_rates)):
            stride, rate = schedule.next_unit(unit_stride)
            x = _bottleneck(x, f"{scope}/{block}/unit_{u + 1}/bottleneck_v1",
                            base_depth * 4, base_depth, stride, rate * unit_rate, bn,
                            all_endpoints)
        endpoints[f"{scope}/{block}"] = x
    schedule.check_reached()
    endpoints[decoder_endpoint(variant)] = all_endpoints[decoder_endpoint(variant)]
    return x, endpoints
