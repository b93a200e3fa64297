"""Plain numpy versions of operations the tests compare against."""

import numpy as np


def resize_bilinear_align_corners(image, out_h, out_w):
    """TF1 ``resize_bilinear(align_corners=True)`` of an ``[H, W, ...]`` array, in float64."""
    image = np.asarray(image, np.float64)
    in_h, in_w = image.shape[:2]
    ys = np.arange(out_h) * ((in_h - 1) / (out_h - 1) if out_h > 1 else 0.0)
    xs = np.arange(out_w) * ((in_w - 1) / (out_w - 1) if out_w > 1 else 0.0)
    y0 = np.floor(ys).astype(int)
    x0 = np.floor(xs).astype(int)
    y1 = np.minimum(y0 + 1, in_h - 1)
    x1 = np.minimum(x0 + 1, in_w - 1)
    dy = (ys - y0).reshape((-1, 1) + (1,) * (image.ndim - 2))
    dx = (xs - x0).reshape((1, -1) + (1,) * (image.ndim - 2))
    top = image[y0][:, x0] * (1 - dx) + image[y0][:, x1] * dx
    bottom = image[y1][:, x0] * (1 - dx) + image[y1][:, x1] * dx
    return top * (1 - dy) + bottom * dy
