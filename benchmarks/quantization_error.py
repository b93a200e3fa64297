"""Where a dynamic-range TFLite model's accuracy goes: the int8 weights
themselves, or LiteRT's kernels (which also quantise activations on the fly).

    python benchmarks/quantization_error.py --checkpoint_dir=/tmp/msrc_run \\
        --tflite=/tmp/export_formats/tflite_dynamic_range/model.tflite

On every image of ``--split`` (whole images), against the checkpoint's
network in TensorFlow (float32), reports the share of pixels whose argmax
agrees and the mIoU (``core.metrics``) of:

* the network in TensorFlow with every convolution kernel of at least 1024
  weights (the converter's threshold) rounded to int8, one scale per output
  channel (per input channel for depthwise kernels), activations in float32:
  the error of the weights alone;
* the ``.tflite`` model under each of LiteRT's kernel sets: the default
  (XNNPACK delegate), the built-in kernels without it, and the reference
  kernels.
"""

if __package__ in (None, ""):
    import os, sys  # pylint: disable=g-multiple-import
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import json
import os

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("checkpoint_dir", None, "A train_logdir written by train.py.")
flags.DEFINE_string("tflite", None, "The dynamic-range model.tflite of that checkpoint.")
flags.DEFINE_string("split", "val", "Split to evaluate.")
flags.DEFINE_integer("num_threads", os.cpu_count(), "LiteRT threads.")
flags.DEFINE_string("json", None, "Write the results to this JSON file.")
flags.mark_flags_as_required(["checkpoint_dir", "tflite"])

CONVERTER_MIN_ELEMENTS = 1024  # smaller weight tensors stay float32


def fake_quantize_int8_weights(network):
    """Rounds each large convolution kernel to int8 with a symmetric scale per channel."""
    import keras
    import numpy as np

    for layer in network.layers:
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            kernel, channel_axis = layer.kernel, 2  # [kh, kw, in, multiplier]
        elif isinstance(layer, keras.layers.Conv2D):
            kernel, channel_axis = layer.kernel, 3  # [kh, kw, in, out]
        else:
            continue
        values = kernel.numpy()
        if values.size < CONVERTER_MIN_ELEMENTS:
            continue
        axes = tuple(a for a in range(values.ndim) if a != channel_axis)
        scale = np.abs(values).max(axis=axes, keepdims=True) / 127.0
        scale = np.where(scale == 0, 1.0, scale)
        kernel.assign(np.round(values / scale) * scale)


def main(argv):
    del argv
    import numpy as np
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from core import metrics, run_config, training
    from core.export import segment
    from datasets.dataset_info import get_dataset_info
    from datasets.input_pipeline import eval_dataset

    run = run_config.read_run_config(FLAGS.checkpoint_dir)
    info = get_dataset_info(run["dataset"]["name"], run["dataset"]["dataset_dir"])
    examples = [(batch["image"].numpy().astype(np.uint8), batch["label"].numpy())
                for batch in eval_dataset(info, run["dataset"]["dataset_dir"], FLAGS.split,
                                          None, 1)]
    network = run_config.build_network(run)
    training.network_checkpoint(network).restore(
        tf.train.latest_checkpoint(FLAGS.checkpoint_dir)).expect_partial()

    def tensorflow_semantic():
        predict = tf.function(lambda x: segment(network, x)["semantic"], reduce_retracing=True)
        return [predict(tf.constant(image, tf.float32)).numpy() for image, _ in examples]

    reference = tensorflow_semantic()
    results = {}

    def score(name, predictions):
        confusion = np.zeros((info.num_classes, info.num_classes))
        agree = pixels = 0
        for (_, label), predicted, expected in zip(examples, predictions, reference):
            confusion += metrics.confusion_counts(label, predicted[..., None], info.num_classes,
                                                  info.ignore_label).numpy()
            agree += int((predicted == expected).sum())
            pixels += predicted.size
        miou = metrics.iou_from_confusion(confusion)[0]
        results[name] = dict(agreement=agree / pixels, miou=miou)
        print(f"| {name} | {100 * agree / pixels:.3f}% | {100 * miou:.2f} |", flush=True)

    print("| model | pixels agreeing with float32 | mIoU |\n|---|---|---|")
    score("TensorFlow, float32", reference)
    for resolver, name in ((OpResolverType.AUTO, "default (XNNPACK)"),
                           (OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
                            "built-in kernels, no XNNPACK"),
                           (OpResolverType.BUILTIN_REF, "reference kernels")):
        runner = Interpreter(model_path=FLAGS.tflite, num_threads=FLAGS.num_threads,
                             experimental_op_resolver_type=resolver).get_signature_runner()
        score(f"dynamic-range .tflite, LiteRT {name}",
              [runner(images=image)["semantic"] for image, _ in examples])
    fake_quantize_int8_weights(network)
    score("TensorFlow, int8 weights per channel, float32 activations", tensorflow_semantic())
    if FLAGS.json:
        with open(FLAGS.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    app.run(main)
