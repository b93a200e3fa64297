"""Plain numpy (float64) versions of operations the tests compare against."""

import numpy as np


def resize_bilinear_align_corners(x, size):
    """TF1 ``resize_bilinear(align_corners=True)`` of ``[N, H, W, C]``:
    source = dst * (in - 1) / (out - 1), one interpolation matrix per axis."""
    x = np.asarray(x, np.float64)

    def weights(in_size, out_size):
        scale = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
        src = np.arange(out_size) * scale
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, in_size - 1)
        matrix = np.zeros((out_size, in_size))
        matrix[np.arange(out_size), lo] += 1 - (src - lo)
        matrix[np.arange(out_size), hi] += src - lo
        return matrix

    rows, cols = weights(x.shape[1], size[0]), weights(x.shape[2], size[1])
    return np.einsum("yh,nhwc,xw->nyxc", rows, x, cols)


def resize_nearest_align_corners(x, size):
    """TF1 ``resize_nearest_neighbor(align_corners=True)`` of ``[N, H, W, C]``:
    source = round(dst * (in - 1) / (out - 1))."""

    def axis(in_size, out_size):
        scale = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
        return np.minimum(np.floor(np.arange(out_size) * scale + 0.5).astype(int), in_size - 1)

    return x[:, axis(x.shape[1], size[0])][:, :, axis(x.shape[2], size[1])]


def resize_nearest_floor(x, size):
    """TF1 ``resize_nearest_neighbor`` default (align_corners=False,
    half_pixel_centers=False) of ``[N, H, W, C]``: source = floor(dst * in / out),
    with the scale and product in float32 as TensorFlow computes them."""

    def axis(in_size, out_size):
        scale = np.float32(in_size) / np.float32(out_size)
        source = np.floor(np.arange(out_size, dtype=np.float32) * scale).astype(int)
        return np.minimum(source, in_size - 1)

    return x[:, axis(x.shape[1], size[0])][:, :, axis(x.shape[2], size[1])]


def softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
