"""Runs an exported ``.tflite`` segmentation model with ``ai-edge-litert``.

    segmenter = TFLiteSegmenter("exports/voc_8_tflite/model.tflite")
    outputs = segmenter(images)      # uint8 [N, H, W, 3] -> {"semantic", "probabilities"}

``ai-edge-litert`` is the successor of ``tf.lite.Interpreter`` (deprecated);
this module imports neither TensorFlow nor the rest of the project, so a
``.tflite`` model can be run where only numpy and ``ai-edge-litert`` are
installed. A model with dynamic height and width (the default export) takes
images of any size: the signature runner resizes the input tensor per call.
A model exported with a fixed ``input_size`` takes only that size.
"""

from __future__ import annotations

import os

import numpy as np

SERVING_SIGNATURE = "serving_default"  # core.export.SERVING_SIGNATURE
MODEL_FILE = "model.tflite"  # core.tflite.MODEL_FILE


def tflite_model_path(path: str) -> str | None:
    """The ``.tflite`` file that ``path`` names (the file itself, or an export
    directory holding ``model.tflite``), or None if it names neither."""
    if path.endswith(".tflite") and os.path.isfile(path):
        return path
    candidate = os.path.join(path, MODEL_FILE)
    return candidate if os.path.isfile(candidate) else None


class TFLiteSegmenter:
    """``__call__(images)``: uint8 ``[N, H, W, 3]`` -> ``{"semantic": int32
    [N, H, W], "probabilities": float32 [N, H, W, C]}``."""

    def __init__(self, path: str, num_threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        self.path = path
        self.interpreter = Interpreter(model_path=path, num_threads=num_threads)
        self.runner = self.interpreter.get_signature_runner(SERVING_SIGNATURE)
        details = self.runner.get_input_details()["images"]
        # -1 marks a dynamic dimension.
        self.input_shape = tuple(int(d) for d in details["shape_signature"])

    @property
    def fixed_size(self) -> tuple[int, int] | None:
        """(height, width) of a model exported with a fixed input size, else None."""
        height, width = self.input_shape[1:3]
        return None if min(height, width) < 0 else (height, width)

    def __call__(self, images: np.ndarray) -> dict:
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must be uint8 [N, H, W, 3], got {images.dtype} "
                             f"{list(images.shape)}")
        for want, got in zip(self.input_shape, images.shape):
            if want >= 0 and want != got:
                raise ValueError(
                    f"{self.path} takes images of shape {list(self.input_shape)} "
                    f"(-1: any), got {list(images.shape)}; export it without "
                    f"--input_size for any size")
        outputs = self.runner(images=images)
        return {"semantic": outputs["semantic"], "probabilities": outputs["probabilities"]}
