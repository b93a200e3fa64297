"""DeepLabv3+ (Chen et al., ECCV 2018) in Keras 3, numerically DeepLab's.

``build_model`` returns a Keras functional model. Called on float32 RGB
images in [0, 255] (NHWC, any size) it returns::

    {"logits":     [N, h, w, C]   decoder logits at stride 4 (at the output
                                  stride when there is no decoder), before
                                  upsampling,
     "cls_logits": [N, C - 1]     PseudoSeg's image classification head,
     "endpoints":  {DeepLab endpoint name: feature map}}

Architecture (docs/deeplab-port.md has the full list of what matches DeepLab):

    x      = images * 2/255 - 1
    F      = backbone(x)                                  (output stride 8/16)
    ASPP   = concat[ImagePool(F), aspp0(F), aspp1..3(F)]  (1x1 / separable convs)
    A      = Dropout_0.1(ReLU(BN(concat_projection(ASPP))))
    D      = resize(A) ++ feature_projection0(low-level)  (stride 4, align corners)
    logits = logits/semantic(decoder_conv1(decoder_conv0(D)))
    cls    = <scope>/logits(Dropout(mean_hw(F)))          (C - 1 logits)

Layer names are DeepLab's checkpoint scopes with ``/`` written as ``.``;
``core.checkpoints`` maps weights to checkpoint names in one place.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import keras

from core.backbones import mobilenet_v2 as mobilenet_v2_lib
from core.backbones import resnet_v1_beta as resnet_lib
from core.backbones import xception as xception_lib
from core.layers import (
    BatchNormConfig,
    ResizeBilinearLike,
    SpatialMean,
    conv_bn,
    keras_name,
    split_separable_conv_bn,
)

MODEL_VARIANTS = ("xception_65", "resnet_v1_50_beta", "resnet_v1_101_beta", "mobilenet_v2")
OUTPUT_STRIDES = (8, 16, 32)

# ASPP and decoder batch norm (all variants).
HEAD_BATCH_NORM = dict(epsilon=1e-5, decay=0.9997)
ASPP_DEPTH = 256
DECODER_DEPTH = 256
DECODER_PROJECTION_DEPTH = 48


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """What the heads and PseudoSeg need to know about a backbone.

    ``scope``: checkpoint scope; ``output_endpoint``: the last feature map (the
    one Grad-CAM differentiates); ``hypercolumn_endpoints``: the two deepest
    maps the SGC layer attends over; ``decoder_endpoint``: the stride-4
    low-level feature; ``cls_scope``: checkpoint scope of the classification
    head; ``cls_dropout``: its dropout rate in training.
    """

    scope: str
    output_endpoint: str
    hypercolumn_endpoints: tuple[str, str]
    decoder_endpoint: str
    cls_scope: str
    cls_dropout: float


def backbone_spec(model_variant: str) -> BackboneSpec:
    """The ``BackboneSpec`` of ``model_variant``."""
    if model_variant == "xception_65":
        return BackboneSpec(
            scope=xception_lib.SCOPE,
            output_endpoint=xception_lib.OUTPUT_ENDPOINT,
            hypercolumn_endpoints=xception_lib.HYPERCOLUMN_ENDPOINTS,
            decoder_endpoint=xception_lib.DECODER_ENDPOINT,
            cls_scope=f"{xception_lib.SCOPE}/logits",
            cls_dropout=0.5,
        )
    if model_variant in resnet_lib.UNITS:
        scope = resnet_lib.scope_of(model_variant)
        return BackboneSpec(
            scope=scope,
            output_endpoint=resnet_lib.output_endpoint(model_variant),
            hypercolumn_endpoints=resnet_lib.hypercolumn_endpoints(model_variant),
            decoder_endpoint=resnet_lib.decoder_endpoint(model_variant),
            cls_scope=f"{scope}/logits",
            cls_dropout=0.0,
        )
    if model_variant == "mobilenet_v2":
        # DeepLab's MobileNetV2 has no classification head; this name is ours.
        return BackboneSpec(
            scope=mobilenet_v2_lib.SCOPE,
            output_endpoint=mobilenet_v2_lib.OUTPUT_ENDPOINT,
            hypercolumn_endpoints=mobilenet_v2_lib.HYPERCOLUMN_ENDPOINTS,
            decoder_endpoint=mobilenet_v2_lib.DECODER_ENDPOINT,
            cls_scope=f"{mobilenet_v2_lib.SCOPE}/cls_logits",
            cls_dropout=0.0,
        )
    raise ValueError(
        f"unknown model_variant {model_variant!r}; expected one of {', '.join(MODEL_VARIANTS)}"
    )


def _backbone(x, model_variant, output_stride, multi_grid, sync_batch_norm, batch_norm_decay):
    if model_variant == "xception_65":
        return xception_lib.xception_65(x, output_stride, multi_grid, sync_batch_norm,
                                        batch_norm_decay)
    if model_variant in resnet_lib.UNITS:
        return resnet_lib.resnet_v1_beta(x, model_variant, output_stride, multi_grid,
                                         sync_batch_norm, batch_norm_decay)
    return mobilenet_v2_lib.mobilenet_v2(x, output_stride, multi_grid, sync_batch_norm,
                                         batch_norm_decay)


def _aspp(features, atrous_rates, bn, dropout_rate):
    """Image pooling + aspp0 + atrous separable branches + concat projection."""
    pooled = SpatialMean(name="image_pooling.mean")(features)
    pooled = conv_bn(pooled, ASPP_DEPTH, 1, "image_pooling", bn)
    branches = [ResizeBilinearLike(name="image_pooling.resize")(pooled, features)]
    branches.append(conv_bn(features, ASPP_DEPTH, 1, "aspp0", bn))
    for i, rate in enumerate(atrous_rates or (), start=1):
        branches.append(
            split_separable_conv_bn(
                features, ASPP_DEPTH, f"aspp{i}", bn, rate=rate,
                depthwise_initializer=keras.initializers.TruncatedNormal(stddev=0.33),
                pointwise_initializer=keras.initializers.TruncatedNormal(stddev=0.06),
            )
        )
    x = keras.layers.Concatenate(name="aspp.concat")(branches)
    x = conv_bn(x, ASPP_DEPTH, 1, "concat_projection", bn)
    if dropout_rate:
        x = keras.layers.Dropout(dropout_rate, name="concat_projection_dropout")(x)
    return x


def _decoder(features, low_level, bn):
    """DeepLabv3+ decoder at stride 4: [resize(ASPP), 1x1 48(low-level)] -> 2 separable convs."""
    projected = conv_bn(low_level, DECODER_PROJECTION_DEPTH, 1, "decoder/feature_projection0", bn)
    # Both go to ((H - 1) // 4 + 1, (W - 1) // 4 + 1), the low-level feature's size.
    upsampled = ResizeBilinearLike(name="decoder.resize_aspp")(features, projected)
    x = keras.layers.Concatenate(name="decoder.concat")([upsampled, projected])
    for i in range(2):
        x = split_separable_conv_bn(
            x, DECODER_DEPTH, f"decoder/decoder_conv{i}", bn,
            depthwise_initializer=keras.initializers.TruncatedNormal(stddev=0.33),
            pointwise_initializer=keras.initializers.TruncatedNormal(stddev=0.06),
        )
    return x


class ClassificationHead:
    """PseudoSeg's classifier on the backbone output: spatial mean, dropout
    (Xception only), 1x1 conv to C - 1 logits with bias.

    Its layers are part of the network; calling the head on any feature map
    reuses them, which Grad-CAM needs (``wss.gradcam``).
    """

    def __init__(self, num_classes, spec: BackboneSpec, use_dropout):
        self.pool = SpatialMean(name=keras_name(spec.cls_scope + "/global_pool"))
        self.dropout = (keras.layers.Dropout(spec.cls_dropout,
                                             name=keras_name(spec.cls_scope + "/dropout"))
                        if use_dropout and spec.cls_dropout else None)
        self.conv = keras.layers.Conv2D(num_classes - 1, 1, use_bias=True,
                                        name=keras_name(spec.cls_scope))
        self.squeeze = keras.layers.Reshape((num_classes - 1,),
                                            name=keras_name(spec.cls_scope + "/squeeze"))

    def __call__(self, features, training=None):
        x = self.pool(features)
        if self.dropout is not None:
            x = self.dropout(x, training=training)
        return self.squeeze(self.conv(x))


def build_model(
    model_variant: str,
    num_classes: int,
    output_stride: int = 16,
    atrous_rates: Sequence[int] | None = (6, 12, 18),
    decoder_output_stride: int | None = 4,
    multi_grid: Sequence[int] | None = None,
    *,
    sync_batch_norm: bool = False,
    batch_norm_decay: float | None = None,
    use_dropout: bool = True,
    name: str | None = None,
) -> keras.Model:
    """Builds DeepLabv3+ with PseudoSeg's classification head.

    Args:
      model_variant: ``xception_65``, ``resnet_v1_50_beta``,
        ``resnet_v1_101_beta`` or ``mobilenet_v2``.
      num_classes: segmentation classes C including background; the
        classification head predicts the C - 1 foreground classes.
      output_stride: 8, 16 or 32 (ratio of input size to backbone output size).
      atrous_rates: rates of the three atrous ASPP branches (6, 12, 18 at OS16,
        12, 24, 36 at OS8); ``None`` or empty keeps only image pooling + aspp0.
      decoder_output_stride: 4 adds the decoder; ``None`` turns it off.
      multi_grid: unit rates of the last block (three entries), e.g. (1, 2, 4).
      sync_batch_norm: synchronise batch statistics across replicas.
      batch_norm_decay: moving-average decay of every batch norm (default:
        DeepLab's per part, 0.95 .. 0.9997, made for 30k-step runs).
      use_dropout: keep the dropout layers (ASPP 0.1, Xception's head 0.5);
        off for exact replica-count comparisons.
    """
    spec = backbone_spec(model_variant)
    if output_stride not in OUTPUT_STRIDES:
        raise ValueError(f"output_stride must be one of {OUTPUT_STRIDES}, got {output_stride}")
    if decoder_output_stride not in (None, 4):
        raise ValueError(
            f"decoder_output_stride must be 4 or None (DeepLab's low-level feature is "
            f"at stride 4), got {decoder_output_stride}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")

    images = keras.Input(shape=(None, None, 3), name="images")
    x = keras.layers.Rescaling(2.0 / 255.0, offset=-1.0, name="preprocess")(images)
    features, endpoints = _backbone(x, model_variant, output_stride, multi_grid,
                                    sync_batch_norm, batch_norm_decay)
    head_bn = BatchNormConfig.for_part(HEAD_BATCH_NORM, sync_batch_norm, batch_norm_decay)
    x = _aspp(features, atrous_rates, head_bn, 0.1 if use_dropout else 0.0)
    if decoder_output_stride:
        x = _decoder(x, endpoints[spec.decoder_endpoint], head_bn)
    logits = keras.layers.Conv2D(
        num_classes, 1, use_bias=True,
        kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.01),
        name=keras_name("logits/semantic"),
    )(x)
    head = ClassificationHead(num_classes, spec, use_dropout)
    cls_logits = head(features)
    model = keras.Model(
        images,
        {"logits": logits, "cls_logits": cls_logits, "endpoints": endpoints},
        name=name or f"deeplabv3plus_{model_variant}",
    )
    model.model_variant = model_variant
    model.backbone_spec = spec
    model.num_classes = num_classes
    model.output_stride = output_stride
    model.classification_head = head
    model.config = dict(model_variant=model_variant, num_classes=num_classes,
                        output_stride=output_stride,
                        atrous_rates=list(atrous_rates) if atrous_rates else None,
                        decoder_output_stride=decoder_output_stride,
                        multi_grid=list(multi_grid) if multi_grid else None)
    return model


def backbone_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The layers of ``model`` that belong to its backbone (checkpoint scope prefix)."""
    prefix = keras_name(model.backbone_spec.scope + "/")
    cls_prefix = keras_name(model.backbone_spec.cls_scope)
    return [layer for layer in model.layers
            if layer.name.startswith(prefix) and not layer.name.startswith(cls_prefix)]


def regularized_kernels(model: keras.Model):
    """Kernels DeepLab applies L2 weight decay to: every Conv2D kernel.

    Depthwise kernels, biases and batch-norm parameters are not regularised
    (DeepLab's ``regularize_depthwise=False`` and slim's defaults).
    """
    return [layer.kernel for layer in model.layers
            if type(layer) is keras.layers.Conv2D]


def main(argv=None):
    """Builds a model and prints its summary and parameter counts."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--model_variant", default="mobilenet_v2", choices=MODEL_VARIANTS)
    parser.add_argument("--num_classes", type=int, default=21)
    parser.add_argument("--output_stride", type=int, default=16)
    parser.add_argument("--crop", type=int, default=129)
    parser.add_argument("--summary", action="store_true", help="print every layer")
    args = parser.parse_args(argv)
    import numpy as np

    model = build_model(args.model_variant, args.num_classes, args.output_stride)
    if args.summary:
        model.summary(line_length=140)
    out = model(np.zeros((1, args.crop, args.crop, 3), np.float32), training=False)
    print(f"{args.model_variant}: {model.count_params():,} parameters "
          f"({sum(int(np.prod(w.shape)) for w in model.trainable_weights):,} trainable)")
    print(f"  logits {tuple(out['logits'].shape)}  cls_logits {tuple(out['cls_logits'].shape)}")
    for name, value in out["endpoints"].items():
        print(f"  {name:<75s} {tuple(value.shape)}")


if __name__ == "__main__":
    main()
