"""Reading and validating source images and masks for the converters.

Pure Pillow/NumPy (no TensorFlow), so the converters' worker processes stay
light. Every problem raises ``BadInputError`` naming the file and the problem.
"""

import io
import os
from typing import Iterable, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

# Formats stored byte-for-byte; anything else is re-encoded as RGB PNG.
_KEPT_FORMATS = {"JPEG": "jpeg", "PNG": "png"}
_KEPT_MODES = {"JPEG": ("RGB", "L"), "PNG": ("RGB",)}


class BadInputError(Exception):
    """A source file cannot be converted; ``str()`` names the file and problem."""

    def __init__(self, path: str, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


def find_file(directory: str, stem: str, extensions: Sequence[str]) -> str:
    """Returns ``{directory}/{stem}{ext}`` for the first extension that exists.

    Raises:
      BadInputError: no such file (names every path tried).
    """
    tried = []
    for ext in extensions:
        path = os.path.join(directory, stem + ext)
        if os.path.isfile(path):
            return path
        tried.append(path)
    raise BadInputError(tried[0], "no file for id " + repr(stem) +
                        " (looked for " + ", ".join(tried) + ")")


def read_image(path: str) -> Tuple[bytes, str, int, int]:
    """Reads and fully decodes an image file to validate it.

    JPEG (RGB or grayscale) and RGB PNG files are kept byte-for-byte; other
    formats or modes (CMYK, palette, RGBA, 16-bit ...) are converted to RGB and
    re-encoded as PNG, so the record decodes to what ``Image.convert("RGB")``
    gives.

    Returns:
      (encoded bytes, format "jpeg"/"png", height, width).

    Raises:
      BadInputError: missing, unreadable or corrupt file.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise BadInputError(path, f"cannot read image: {e}") from None
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            fmt, mode = image.format, image.mode
            width, height = image.size
            if fmt in _KEPT_FORMATS and mode in _KEPT_MODES[fmt]:
                return data, _KEPT_FORMATS[fmt], height, width
            rgb = image.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise BadInputError(path, f"corrupt or unsupported image: {e}") from None
    return encode_png(np.asarray(rgb)), "png", height, width


def read_mask(path: str) -> np.ndarray:
    """Reads a single-channel index mask (palette or grayscale PNG) as uint8.

    The palette index (VOC) or gray value is the raw class value; nothing is
    remapped.

    Raises:
      BadInputError: unreadable file, or a mask with colour channels / values
        beyond 8 bits.
    """
    try:
        with Image.open(path) as mask:
            mask.load()
            mode = mask.mode
            array = np.asarray(mask)
    except FileNotFoundError:
        raise BadInputError(path, "mask file not found") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise BadInputError(path, f"corrupt or unsupported mask: {e}") from None
    if mode in ("P", "L"):
        return array.astype(np.uint8)
    if mode in ("I", "I;16", "I;16B", "I;16L") and array.ndim == 2:
        if array.size and (array.min() < 0 or array.max() > 255):
            raise BadInputError(
                path, f"mask values {array.min()}..{array.max()} do not fit 8 bits")
        return array.astype(np.uint8)
    raise BadInputError(
        path, f"mask must be a single-channel index image (palette or "
        f"grayscale), got mode {mode!r}")


def encode_png(array: np.ndarray) -> bytes:
    """Encodes a uint8 ``[H, W]`` or ``[H, W, 3]`` array as PNG."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).save(
        buffer, format="PNG")
    return buffer.getvalue()


def check_mask(path: str, mask: np.ndarray, height: int, width: int,
               num_classes: int, ignore_label: int) -> None:
    """Checks a mask's size against its image and its values against classes.

    Raises:
      BadInputError: size mismatch, or values that are neither a class
        ``0 .. num_classes-1`` nor ``ignore_label`` (all such values listed).
    """
    if mask.shape[:2] != (height, width):
        raise BadInputError(
            path, f"mask is {mask.shape[0]}x{mask.shape[1]} (HxW) but its image "
            f"is {height}x{width}")
    values = np.unique(mask)
    bad = values[(values >= num_classes) & (values != ignore_label)]
    if bad.size:
        raise BadInputError(
            path, f"label values {bad.tolist()} are neither classes "
            f"0..{num_classes - 1} nor the ignore label {ignore_label}")


def present_classes(mask: np.ndarray, num_classes: int) -> Iterable[int]:
    """Foreground class ids (1..C-1) occurring in ``mask``, sorted."""
    values = np.unique(mask)
    return [int(v) for v in values if 0 < v < num_classes]


def mask_png_and_labels(path: str, mask: np.ndarray, height: int, width: int,
                        num_classes: int, ignore_label: int,
                        with_class_labels: bool
                        ) -> Tuple[bytes, Optional[list]]:
    """Validates ``mask`` and returns (PNG bytes, class labels or None)."""
    check_mask(path, mask, height, width, num_classes, ignore_label)
    labels = present_classes(mask, num_classes) if with_class_labels else None
    return encode_png(mask), labels
