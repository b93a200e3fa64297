"""Per-example augmentation ops for the training pipelines (stateless RNG).

Every random op takes a ``seed`` (int32/int64 tensor of shape [2]) and uses
``tf.random.stateless_*``, so one seed per example makes the whole pipeline
reproducible. Images are float32 RGB in [0, 255]; labels int32 ``[H, W, 1]``
with raw class values; valid masks float32 ``[H, W, 1]``.

Weak view / labeled images (``random_geometry``): random scale in
[min, max] by ``step`` (image bilinear, antialiased when shrinking; label
nearest), pad bottom/right to the crop with the mean pixel (labels with the
ignore label, valid mask with 0), random crop, random horizontal flip of image,
label and valid mask together.

Strong view (``strong_view``): the weak crop plus colour jitter (brightness,
contrast, saturation, hue, in a random order, always applied, torchvision
``ColorJitter`` semantics) and one CutOut square at a uniformly random centre
(possibly partly outside the crop) filled with the mean pixel.
"""

from typing import Dict, Optional, Sequence, Tuple

import tensorflow as tf

MEAN_PIXEL = 127.5

# Order of the colour ops in ``apply_color_ops``'s ``order`` argument.
BRIGHTNESS, CONTRAST, SATURATION, HUE = 0, 1, 2, 3


def split_seed(seed: tf.Tensor, num: int) -> Sequence[tf.Tensor]:
    """Derives ``num`` independent [2]-shaped seeds from one."""
    seeds = tf.random.experimental.stateless_split(seed, num=num)
    return [seeds[i] for i in range(num)]


def random_scale_factor(seed: tf.Tensor, min_scale_factor: float,
                        max_scale_factor: float,
                        scale_factor_step_size: float) -> tf.Tensor:
    """Draws a scale factor (float32 scalar).

    Uniform over ``min, min+step, ..., max`` when ``step > 0``; uniform in
    [min, max) when ``step == 0``; the constant ``min`` when ``min == max``.
    """
    if min_scale_factor <= 0 or min_scale_factor > max_scale_factor:
        raise ValueError(
            f"need 0 < min_scale_factor <= max_scale_factor, got "
            f"{min_scale_factor}, {max_scale_factor}")
    if scale_factor_step_size < 0:
        raise ValueError(
            f"scale_factor_step_size must be >= 0, got {scale_factor_step_size}")
    if min_scale_factor == max_scale_factor:
        return tf.constant(min_scale_factor, tf.float32)
    if scale_factor_step_size == 0:
        return tf.random.stateless_uniform(
            [], seed, minval=min_scale_factor, maxval=max_scale_factor)
    num_steps = int(round(
        (max_scale_factor - min_scale_factor) / scale_factor_step_size)) + 1
    index = tf.random.stateless_uniform(
        [], seed, minval=0, maxval=num_steps, dtype=tf.int32)
    return (min_scale_factor
            + tf.cast(index, tf.float32) * scale_factor_step_size)


def scale_image_and_label(image: tf.Tensor, label: tf.Tensor,
                          scale: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
    """Resizes image (bilinear) and label (nearest) to ``floor(size * scale)``.

    The image is antialiased when shrinking. Both use half-pixel centres, so
    they stay pixel-aligned.
    """
    shape = tf.shape(image)
    size = tf.cast(tf.cast(shape[:2], tf.float32) * scale, tf.int32)
    size = tf.maximum(size, 1)
    image = tf.cond(
        scale < 1.0,
        lambda: tf.image.resize(image, size, method="bilinear", antialias=True),
        lambda: tf.image.resize(image, size, method="bilinear"))
    label = tf.image.resize(label, size, method="nearest")
    return image, label


def pad_to_at_least(image: tf.Tensor, label: tf.Tensor, height: int,
                    width: int, ignore_label: int
                    ) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Pads bottom/right up to at least ``height`` x ``width``.

    Returns:
      (image padded with MEAN_PIXEL, label padded with ``ignore_label``,
      float32 valid mask: 1 on the original pixels, 0 on padding).
    """
    shape = tf.shape(image)
    pad_h = tf.maximum(height - shape[0], 0)
    pad_w = tf.maximum(width - shape[1], 0)
    paddings = [[0, pad_h], [0, pad_w], [0, 0]]
    image = tf.pad(image, paddings, constant_values=MEAN_PIXEL)
    label = tf.pad(label, paddings, constant_values=ignore_label)
    valid = tf.pad(tf.ones([shape[0], shape[1], 1], tf.float32), paddings)
    return image, label, valid


def random_crop(tensors: Sequence[tf.Tensor], height: int, width: int,
                seed: tf.Tensor) -> Sequence[tf.Tensor]:
    """Crops the same random ``height`` x ``width`` window from each tensor.

    All tensors must share their first two dimensions, each >= the crop.
    """
    shape = tf.shape(tensors[0])
    seeds = split_seed(seed, 2)
    top = tf.random.stateless_uniform(
        [], seeds[0], minval=0, maxval=shape[0] - height + 1, dtype=tf.int32)
    left = tf.random.stateless_uniform(
        [], seeds[1], minval=0, maxval=shape[1] - width + 1, dtype=tf.int32)
    cropped = []
    for tensor in tensors:
        channels = tensor.shape[-1]
        out = tf.slice(tensor, [top, left, 0], [height, width, -1])
        out.set_shape([height, width, channels])
        cropped.append(out)
    return cropped


def random_flip(tensors: Sequence[tf.Tensor], seed: tf.Tensor
                ) -> Sequence[tf.Tensor]:
    """Flips all tensors left-right together with probability 0.5."""
    flip = tf.random.stateless_uniform([], seed) < 0.5
    return [tf.cond(flip, lambda t=t: tf.reverse(t, axis=[1]), lambda t=t: t)
            for t in tensors]


def random_geometry(image: tf.Tensor, label: tf.Tensor, crop_size: Tuple[int, int],
                    ignore_label: int, seed: tf.Tensor,
                    min_scale_factor: float = 0.5,
                    max_scale_factor: float = 2.0,
                    scale_factor_step_size: float = 0.25
                    ) -> Dict[str, tf.Tensor]:
    """Random scale, pad, crop and flip (the weak view / labeled images).

    Returns:
      {"image": float32 [h, w, 3], "label": int32 [h, w, 1] (ignore label on
      padding), "valid_mask": float32 [h, w, 1] (0 on padding)}.
    """
    height, width = crop_size
    seeds = split_seed(seed, 3)
    scale = random_scale_factor(seeds[0], min_scale_factor, max_scale_factor,
                                scale_factor_step_size)
    image, label = scale_image_and_label(image, label, scale)
    image, label, valid = pad_to_at_least(image, label, height, width,
                                          ignore_label)
    image, label, valid = random_crop([image, label, valid], height, width,
                                      seeds[1])
    image, label, valid = random_flip([image, label, valid], seeds[2])
    return {"image": image, "label": label, "valid_mask": valid}


def _grayscale(image: tf.Tensor) -> tf.Tensor:
    """ITU-R 601 luma (torchvision's weights), keeps a channel axis."""
    weights = tf.constant([0.2989, 0.587, 0.114], image.dtype)
    return tf.reduce_sum(image * weights, axis=-1, keepdims=True)


def _blend(image: tf.Tensor, other: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """``factor * image + (1 - factor) * other``, clipped to [0, 1]."""
    return tf.clip_by_value(factor * image + (1.0 - factor) * other, 0.0, 1.0)


def apply_color_ops(image: tf.Tensor, order: tf.Tensor, factors: tf.Tensor,
                    valid_mask: Optional[tf.Tensor] = None) -> tf.Tensor:
    """Applies brightness, contrast, saturation and hue in a given order.

    Deterministic core of ``color_jitter`` (torchvision semantics, each result
    clipped to the valid range):

    * brightness ``b``: ``x * b``;
    * contrast ``c``: blend of ``x`` with the mean grey level of the image
      (over ``valid_mask`` pixels when given), weight ``c``;
    * saturation ``s``: blend of ``x`` with its own grey level, weight ``s``;
    * hue ``h``: hue shifted by ``h`` turns (in [-0.5, 0.5]).

    Args:
      image: float32 [H, W, 3] in [0, 255].
      order: int32 [4], a permutation of BRIGHTNESS, CONTRAST, SATURATION, HUE.
      factors: float32 [4]: brightness, contrast, saturation factors and hue
        shift.
      valid_mask: optional float32 [H, W, 1]; pixels with 0 do not count in the
        contrast mean.

    Returns:
      float32 [H, W, 3] in [0, 255].
    """
    x = image / 255.0
    if valid_mask is None:
        valid_mask = tf.ones_like(x[..., :1])

    def brightness(x):
        return tf.clip_by_value(x * factors[BRIGHTNESS], 0.0, 1.0)

    def contrast(x):
        total = tf.maximum(tf.reduce_sum(valid_mask), 1.0)
        mean = tf.reduce_sum(_grayscale(x) * valid_mask) / total
        return _blend(x, mean, factors[CONTRAST])

    def saturation(x):
        return _blend(x, _grayscale(x), factors[SATURATION])

    def hue(x):
        return tf.clip_by_value(tf.image.adjust_hue(x, factors[HUE]), 0.0, 1.0)

    branches = [brightness, contrast, saturation, hue]
    for step in range(4):
        x = tf.switch_case(order[step],
                           [lambda f=f, x=x: f(x) for f in branches])
    return x * 255.0


def check_color_jitter(brightness: float, contrast: float, saturation: float,
                       hue: float) -> None:
    """Raises ValueError for negative strengths or a hue outside [0, 0.5]."""
    for name, value in (("brightness", brightness), ("contrast", contrast),
                        ("saturation", saturation)):
        if value < 0:
            raise ValueError(f"colour jitter {name} must be >= 0, got {value}")
    if not 0 <= hue <= 0.5:
        raise ValueError(f"colour jitter hue must be in [0, 0.5], got {hue}")


def random_color_factors(seed: tf.Tensor, brightness: float, contrast: float,
                         saturation: float, hue: float
                         ) -> Tuple[tf.Tensor, tf.Tensor]:
    """Draws a random op order and the factors of ``apply_color_ops``.

    Brightness, contrast and saturation factors are uniform in
    ``[max(0, 1 - s), 1 + s]``; the hue shift is uniform in ``[-hue, hue]``.
    """
    check_color_jitter(brightness, contrast, saturation, hue)
    seeds = split_seed(seed, 2)
    order = tf.argsort(tf.random.stateless_uniform([4], seeds[0]))
    low = tf.constant([max(0.0, 1 - brightness), max(0.0, 1 - contrast),
                       max(0.0, 1 - saturation), -hue], tf.float32)
    high = tf.constant([1 + brightness, 1 + contrast, 1 + saturation, hue],
                       tf.float32)
    unit = tf.random.stateless_uniform([4], seeds[1])
    return tf.cast(order, tf.int32), low + unit * (high - low)


def color_jitter(image: tf.Tensor, seed: tf.Tensor, brightness: float = 0.5,
                 contrast: float = 0.5, saturation: float = 0.5,
                 hue: float = 0.25,
                 valid_mask: Optional[tf.Tensor] = None) -> tf.Tensor:
    """Random colour jitter (random order, always applied); see apply_color_ops."""
    if brightness == contrast == saturation == hue == 0:
        return image
    order, factors = random_color_factors(seed, brightness, contrast,
                                          saturation, hue)
    return apply_color_ops(image, order, factors, valid_mask)


def cutout_mask(height: int, width: int, size: int, seed: tf.Tensor
                ) -> tf.Tensor:
    """float32 [height, width, 1]: 1 inside one random ``size`` square.

    The centre is uniform over the pixels; the square covers rows
    ``[cy - size//2, cy - size//2 + size)`` (likewise columns), clipped to the
    image, so it may lie partly outside.
    """
    seeds = split_seed(seed, 2)
    cy = tf.random.stateless_uniform([], seeds[0], minval=0, maxval=height,
                                     dtype=tf.int32)
    cx = tf.random.stateless_uniform([], seeds[1], minval=0, maxval=width,
                                     dtype=tf.int32)
    top, left = cy - size // 2, cx - size // 2
    rows = tf.range(height)
    cols = tf.range(width)
    in_rows = (rows >= top) & (rows < top + size)
    in_cols = (cols >= left) & (cols < left + size)
    inside = in_rows[:, None] & in_cols[None, :]
    return tf.cast(inside, tf.float32)[..., None]


def strong_view(weak_image: tf.Tensor, valid_mask: tf.Tensor, seed: tf.Tensor,
                cutout_size: int = 100, brightness: float = 0.5,
                contrast: float = 0.5, saturation: float = 0.5,
                hue: float = 0.25) -> Tuple[tf.Tensor, tf.Tensor]:
    """Makes the strong view of a weak crop.

    Colour jitter of the real pixels (padding stays the mean pixel), then one
    CutOut square filled with the mean pixel (``cutout_size`` 0 disables it).

    Returns:
      (strong image float32 [h, w, 3], strong valid mask float32 [h, w, 1] =
      ``valid_mask`` with the CutOut square set to 0).
    """
    if cutout_size < 0:
        raise ValueError(f"cutout_size must be >= 0, got {cutout_size}")
    seeds = split_seed(seed, 2)
    strong = color_jitter(weak_image, seeds[0], brightness, contrast,
                          saturation, hue, valid_mask)
    strong_valid = valid_mask
    if cutout_size > 0:
        height, width = weak_image.shape[0], weak_image.shape[1]
        if height is None or width is None:
            shape = tf.shape(weak_image)
            height, width = shape[0], shape[1]
        cut = cutout_mask(height, width, cutout_size, seeds[1])
        strong_valid = valid_mask * (1.0 - cut)
    # Padding and the CutOut square both hold the mean pixel.
    strong = tf.where(strong_valid > 0, strong, MEAN_PIXEL)
    return strong, strong_valid


def class_presence(label: tf.Tensor, num_classes: int) -> tf.Tensor:
    """float32 [C-1] multi-hot of the classes 1..C-1 occurring in ``label``.

    Class 0 ("background") and values outside 0..C-1 (the ignore label) are not
    counted.
    """
    flat = tf.reshape(label, [-1])
    keep = (flat >= 1) & (flat < num_classes)
    counts = tf.math.bincount(tf.boolean_mask(flat, keep), minlength=num_classes,
                              maxlength=num_classes, dtype=tf.int32)
    return tf.cast(counts[1:] > 0, tf.float32)


def labels_to_multi_hot(class_ids: tf.Tensor, num_classes: int) -> tf.Tensor:
    """float32 [C-1] multi-hot of image-level class ids in 1..C-1.

    Raises (at run time) InvalidArgumentError for ids outside 1..C-1.
    """
    class_ids = tf.cast(class_ids, tf.int32)
    checks = [
        tf.debugging.assert_greater_equal(
            class_ids, 1, message="image/class_labels must be in 1..C-1"),
        tf.debugging.assert_less(
            class_ids, num_classes,
            message="image/class_labels must be in 1..C-1"),
    ]
    with tf.control_dependencies(checks):
        class_ids = tf.identity(class_ids)
    hot = tf.one_hot(class_ids - 1, num_classes - 1, dtype=tf.float32)
    return tf.minimum(tf.reduce_sum(hot, axis=0), 1.0)
