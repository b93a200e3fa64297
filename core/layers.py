"""Building blocks shared by the DeepLab backbones and heads.

Everything here follows DeepLab's TF1 graph (see docs/deeplab-port.md):

* layer names are DeepLab's variable scopes with ``/`` written as ``.``
  (Keras 3 forbids ``/`` in layer names); ``core.checkpoints`` maps them back;
* a convolution followed by batch norm has no bias, and its batch norm is a
  separate layer named ``<conv>.BatchNorm``;
* strided convolutions with kernel > 1 pad explicitly and symmetrically, then
  run VALID (``fixed_padding``); everything else uses SAME;
* every resize is bilinear with ``align_corners=True``.
"""

from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf


def keras_name(scope: str) -> str:
    """Keras layer name for a DeepLab variable scope (``a/b/c`` -> ``a.b.c``)."""
    return scope.replace("/", ".")


@keras.saving.register_keras_serializable(package="deeplab")
class DeepLabBatchNorm(keras.layers.BatchNormalization):
    """Batch norm as DeepLab's (TF-slim's fused ``batch_norm``), with its
    ``fine_tune_batch_norm`` switch.

        y = gamma (x - mu) / sqrt(sigma^2 + eps) + beta

    Training mode normalises with the batch's moments (mu, sigma^2 over batch,
    height and width) and updates the moving statistics,
    ``m <- decay m + (1 - decay) mu`` and ``v <- decay v + (1 - decay) s^2``
    with ``s^2 = sigma^2 n / (n - 1)`` the unbiased variance over the n values
    of a channel, as TF-slim's fused batch norm does (Keras's own update uses
    sigma^2; the two differ noticeably only where n is small, e.g. ASPP's
    image-pooling branch, n = batch). Inference mode normalises with the moving
    statistics.

    With ``use_moving_statistics`` the layer normalises with the moving
    statistics in both modes and never updates them, while gamma and beta stay
    trainable: DeepLab's ``fine_tune_batch_norm=False`` (slim's ``batch_norm``
    with ``is_training=False`` still creates trainable gamma and beta, and
    DeepLab's train.py trains every trainable variable). Keras's
    ``trainable=False`` would freeze gamma and beta as well.

    4-D channels-last inputs run TensorFlow's fused kernel (FusedBatchNormV3,
    about a third of a MobileNetV2 training step cheaper on CPU than the
    unfused ops: docs/benchmarks.md, "Step cost at the MSRC study's shapes"),
    in float32 whatever the compute dtype, as Keras computes batch norm;
    synchronised, masked or other-rank inputs take Keras's implementation.
    """

    def __init__(self, *args, use_moving_statistics: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.use_moving_statistics = use_moving_statistics

    def _fusable(self, inputs, training, mask) -> bool:
        return (mask is None and not self.synchronized and not self.renorm
                and len(inputs.shape) == 4 and self.axis in (-1, 3)
                and self.scale and self.center and isinstance(training, (bool, type(None))))

    def call(self, inputs, training=None, mask=None):
        if self.use_moving_statistics:
            training = False
        if not self._fusable(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        batch_statistics = bool(training) and self.trainable
        x = tf.cast(inputs, tf.float32)
        gamma = tf.cast(self.gamma, tf.float32)
        beta = tf.cast(self.beta, tf.float32)
        if batch_statistics:
            y, mean, unbiased_variance = tf.compat.v1.nn.fused_batch_norm(
                x, gamma, beta, epsilon=self.epsilon, is_training=True)
            decay = self.momentum
            self.moving_mean.assign(self.moving_mean * decay + mean * (1.0 - decay))
            self.moving_variance.assign(
                self.moving_variance * decay + unbiased_variance * (1.0 - decay))
        else:
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(
                x, gamma, beta, mean=tf.cast(self.moving_mean, tf.float32),
                variance=tf.cast(self.moving_variance, tf.float32), epsilon=self.epsilon,
                is_training=False)
        return tf.cast(y, self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "use_moving_statistics": self.use_moving_statistics}


def deeplab_batch_norms(model, purpose: str) -> list:
    """Every ``DeepLabBatchNorm`` inside ``model``, in layer order.

    Raises TypeError, naming ``purpose`` and the layer, for a plain Keras batch
    norm: it has neither ``use_moving_statistics`` nor TF-slim's unbiased
    moving variance, so whatever ``purpose`` does to batch norms would silently
    skip or mistreat it.
    """
    layers = []
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, DeepLabBatchNorm):
            layers.append(layer)
        elif isinstance(layer, keras.layers.BatchNormalization):
            raise TypeError(f"{purpose}: layer {layer.name!r} is a "
                            f"{type(layer).__name__}, not core.layers.DeepLabBatchNorm")
    return layers


@dataclasses.dataclass(frozen=True)
class BatchNormConfig:
    """Batch-norm settings of one part of the network (DeepLab's values differ by part)."""

    epsilon: float
    decay: float
    synchronized: bool = False

    @classmethod
    def for_part(cls, defaults: dict, synchronized: bool = False, decay: float | None = None):
        """The part's DeepLab values, with the moving-average decay optionally
        overridden (short runs need a faster decay than DeepLab's 30k-step one)."""
        return cls(epsilon=defaults["epsilon"],
                   decay=defaults["decay"] if decay is None else decay,
                   synchronized=synchronized)

    def layer(self, scope: str) -> DeepLabBatchNorm:
        return DeepLabBatchNorm(
            momentum=self.decay,
            epsilon=self.epsilon,
            synchronized=self.synchronized,
            name=keras_name(scope + "/BatchNorm"),
        )


def fixed_padding(x, kernel_size: int, rate: int, scope: str):
    """Pads like DeepLab's ``fixed_padding``: total = k_eff - 1, begin = total // 2.

    k_eff = kernel_size + (kernel_size - 1) * (rate - 1). Used before every
    strided convolution whose kernel is larger than one, which then runs VALID.
    """
    kernel_effective = kernel_size + (kernel_size - 1) * (rate - 1)
    total = kernel_effective - 1
    begin = total // 2
    end = total - begin
    return keras.layers.ZeroPadding2D(
        ((begin, end), (begin, end)), name=keras_name(scope + "/pad")
    )(x)


def _activation(x, activation: str | None, scope: str):
    if activation is None:
        return x
    if activation == "relu":
        return keras.layers.ReLU(name=keras_name(scope + "/relu"))(x)
    if activation == "relu6":
        return keras.layers.ReLU(max_value=6.0, name=keras_name(scope + "/relu6"))(x)
    raise ValueError(f"unknown activation {activation!r} at {scope}")


def _pad_for_stride(x, kernel_size, stride, rate, explicit_padding, scope):
    """DeepLab's padding rule: explicit ``fixed_padding`` + VALID for strided
    convolutions with kernel > 1 (``conv2d_same``), SAME otherwise."""
    if explicit_padding and stride > 1 and kernel_size > 1:
        return fixed_padding(x, kernel_size, rate, scope), "valid"
    return x, "same"


def conv_bn(
    x,
    filters: int,
    kernel_size: int,
    scope: str,
    bn: BatchNormConfig,
    *,
    stride: int = 1,
    rate: int = 1,
    activation: str | None = "relu",
    explicit_padding: bool = True,
    kernel_initializer="glorot_uniform",
):
    """Conv2D (no bias) + BatchNorm + activation, as ``slim.conv2d`` with a normalizer."""
    x, padding = _pad_for_stride(x, kernel_size, stride, rate, explicit_padding, scope)
    x = keras.layers.Conv2D(filters, kernel_size, strides=stride, dilation_rate=rate,
                            padding=padding, use_bias=False,
                            kernel_initializer=kernel_initializer, name=keras_name(scope))(x)
    x = bn.layer(scope)(x)
    return _activation(x, activation, scope)


def depthwise_bn(
    x,
    kernel_size: int,
    scope: str,
    bn: BatchNormConfig,
    *,
    stride: int = 1,
    rate: int = 1,
    activation: str | None = "relu",
    explicit_padding: bool = True,
    kernel_initializer="glorot_uniform",
):
    """DepthwiseConv2D (multiplier 1, no bias) + BatchNorm + activation; the
    kernel is DeepLab's ``depthwise_weights``."""
    x, padding = _pad_for_stride(x, kernel_size, stride, rate, explicit_padding, scope)
    x = keras.layers.DepthwiseConv2D(kernel_size, strides=stride, dilation_rate=rate,
                                     padding=padding, use_bias=False,
                                     depthwise_initializer=kernel_initializer,
                                     name=keras_name(scope))(x)
    x = bn.layer(scope)(x)
    return _activation(x, activation, scope)


def split_separable_conv_bn(
    x,
    filters: int,
    scope: str,
    bn: BatchNormConfig,
    *,
    rate: int = 1,
    stride: int = 1,
    activation: str | None = "relu",
    explicit_padding: bool = True,
    depthwise_initializer="glorot_uniform",
    pointwise_initializer="glorot_uniform",
):
    """DeepLab's split separable conv: ``<scope>_depthwise`` (3x3, BN, act) then
    ``<scope>_pointwise`` (1x1, BN, act). Keras's SeparableConv2D cannot express
    the batch norm between the halves."""
    x = depthwise_bn(
        x,
        3,
        scope + "_depthwise",
        bn,
        stride=stride,
        rate=rate,
        activation=activation,
        explicit_padding=explicit_padding,
        kernel_initializer=depthwise_initializer,
    )
    return conv_bn(
        x,
        filters,
        1,
        scope + "_pointwise",
        bn,
        activation=activation,
        kernel_initializer=pointwise_initializer,
    )


def resize_bilinear_align_corners(images, size):
    """Bilinear resize with align_corners=True, half_pixel_centers=False.

    This is TF1's ``tf.image.resize_bilinear(..., align_corners=True)``, which
    DeepLab uses for every resize; ``keras.ops.image.resize`` has no such mode.
    Computed in float32 and cast back to the input dtype.
    """
    resized = tf.raw_ops.ResizeBilinear(
        images=tf.cast(images, tf.float32),
        size=tf.cast(size, tf.int32),
        align_corners=True,
        half_pixel_centers=False,
    )
    return tf.cast(resized, images.dtype)


def resize_nearest_align_corners(images, size):
    """Nearest-neighbour resize with align_corners=True (for labels and masks)."""
    return tf.raw_ops.ResizeNearestNeighbor(
        images=images,
        size=tf.cast(size, tf.int32),
        align_corners=True,
        half_pixel_centers=False,
    )


def resize_nearest_floor(images, size):
    """Nearest-neighbour resize as TF1's ``resize_nearest_neighbor`` default
    (align_corners=False, half_pixel_centers=False), which the reference
    implementation uses for its valid masks and monitor labels::

        source index = min(floor(dst * in / out), in - 1)

    e.g. 5 -> 3 picks 0, 1, 3 (aligned corners would pick 0, 2, 4).
    """
    return tf.raw_ops.ResizeNearestNeighbor(
        images=images,
        size=tf.cast(size, tf.int32),
        align_corners=False,
        half_pixel_centers=False,
    )


class ResizeBilinearLike(keras.layers.Layer):
    """Resizes ``x`` to the spatial size of ``reference`` (bilinear, align corners)."""

    def call(self, x, reference):
        return resize_bilinear_align_corners(x, tf.shape(reference)[1:3])

    def compute_output_shape(self, x_shape, reference_shape):
        return (x_shape[0], reference_shape[1], reference_shape[2], x_shape[3])


class SpatialMean(keras.layers.Layer):
    """Mean over the spatial axes, keeping them (``[N, 1, 1, C]``); accumulated
    in float32 under mixed precision (a bfloat16 sum of many positions is coarse)."""

    def call(self, x):
        return tf.cast(tf.reduce_mean(tf.cast(x, tf.float32), axis=[1, 2], keepdims=True),
                       x.dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1, 1, input_shape[3])


class AtrousSchedule:
    """DeepLab's output-stride rule, shared by all backbones.

    Units are visited in order with their nominal stride. Until the running
    stride reaches ``output_stride`` a unit keeps its stride and runs at rate 1.
    Once it is reached, a unit loses its stride, runs at the current rate, and
    the rate is multiplied by the stride it lost for the units after it.
    """

    def __init__(self, output_stride: int, initial_stride: int = 1):
        self.output_stride = output_stride
        self.current_stride = initial_stride
        self.rate = 1

    def next_unit(self, stride: int) -> tuple[int, int]:
        """Returns (stride, rate) to use for a unit of nominal ``stride``."""
        if self.current_stride > self.output_stride:
            raise ValueError(f"output stride {self.output_stride} cannot be reached")
        if self.current_stride == self.output_stride:
            rate = self.rate
            self.rate *= stride
            return 1, rate
        self.current_stride *= stride
        return stride, 1

    def check_reached(self):
        if self.current_stride != self.output_stride:
            raise ValueError(
                f"output stride {self.output_stride} cannot be reached "
                f"(the network's nominal stride is {self.current_stride})"
            )
