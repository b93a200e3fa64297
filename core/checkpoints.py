"""Loading DeepLab's TF1 checkpoints (and Keras's ImageNet MobileNetV2) into ``build_model``.

The name mapping lives here and only here. A Keras layer is named after its
DeepLab variable scope with ``/`` written as ``.``; its variables map to::

    Conv2D              kernel -> <scope>/weights          bias -> <scope>/biases
    DepthwiseConv2D     kernel -> <scope>/depthwise_weights
    BatchNormalization  gamma, beta, moving_mean, moving_variance -> <scope>/<same>

e.g. layer ``xception_65.entry_flow.conv1_1.BatchNorm``, variable ``gamma`` ->
``xception_65/entry_flow/conv1_1/BatchNorm/gamma``. Layouts are the same in
both frameworks (``[kh, kw, cin, cout]``, depthwise ``[kh, kw, cin, 1]``).

Command line: ``python -m core.checkpoints --checkpoint=PATH --model_variant=NAME``
prints what a checkpoint would load into a model.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Iterable

import keras
import tensorflow as tf

_CONV_NAMES = {"kernel": "weights", "bias": "biases"}
_DEPTHWISE_NAMES = {"kernel": "depthwise_weights"}
_BATCH_NORM_NAMES = {n: n for n in ("gamma", "beta", "moving_mean", "moving_variance")}

# Checkpoint entries that are training state, not model weights.
_TRAINING_STATE_MARKERS = ("/Momentum", "/ExponentialMovingAverage", "global_step",
                           "/Adam", "beta1_power", "beta2_power")


def _variable_names(layer) -> dict[str, str]:
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return _DEPTHWISE_NAMES
    if isinstance(layer, keras.layers.Conv2D):
        return _CONV_NAMES
    if isinstance(layer, keras.layers.BatchNormalization):
        return _BATCH_NORM_NAMES
    return {}


def checkpoint_variables(model: keras.Model) -> dict[str, keras.Variable]:
    """Maps DeepLab checkpoint names to the model's variables."""
    names = {}
    for layer in model.layers:
        suffixes = _variable_names(layer)
        scope = layer.name.replace(".", "/")
        for variable in layer.weights:
            short = variable.path.rsplit("/", 1)[-1]
            if short not in suffixes:
                raise ValueError(f"no checkpoint name for variable {variable.path} of "
                                 f"{type(layer).__name__} {layer.name}")
            names[f"{scope}/{suffixes[short]}"] = variable
    unnamed = [v.path for v in model.weights
               if not any(v is named for named in names.values())]
    if unnamed:
        raise ValueError(f"variables without a checkpoint name: {unnamed[:5]}")
    return names


@dataclasses.dataclass
class LoadReport:
    """What ``load_deeplab_checkpoint`` did.

    ``loaded``: names assigned. ``missing``: model variables the checkpoint
    lacks (or that were excluded); they keep their fresh initialisation.
    ``unused``: checkpoint weights no model variable took. ``training_state``:
    optimizer slots and counters in the checkpoint, ignored.
    """

    path: str
    loaded: list[str]
    missing: list[str]
    excluded: list[str]
    unused: list[str]
    training_state: list[str]

    def summary(self, limit: int = 20) -> str:
        lines = [f"checkpoint {self.path}:",
                 f"  loaded {len(self.loaded)} variables"]
        for title, names in (("model variables not in the checkpoint (kept as initialised)",
                              self.missing),
                             ("model variables excluded from loading", self.excluded),
                             ("checkpoint variables not used", self.unused)):
            lines.append(f"  {title}: {len(names)}")
            lines.extend(f"    {n}" for n in names[:limit])
            if len(names) > limit:
                lines.append(f"    ... and {len(names) - limit} more")
        lines.append(f"  optimizer state and counters ignored: {len(self.training_state)}")
        return "\n".join(lines)


def resolve_checkpoint_path(path: str) -> str:
    """A checkpoint prefix from a prefix or a directory (its latest checkpoint)."""
    if os.path.isdir(path):
        latest = tf.train.latest_checkpoint(path)
        if latest is None:
            raise FileNotFoundError(f"no checkpoint found in directory {path}")
        return latest
    if not tf.io.gfile.exists(path + ".index") and not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"checkpoint {path} not found (no {path}.index)")
    return path


def _is_excluded(name: str, exclude: Iterable[str]) -> bool:
    return any(name == e or name.startswith(e.rstrip("/") + "/") for e in exclude)


def load_deeplab_checkpoint(model: keras.Model, path: str,
                            exclude: Iterable[str] = ()) -> LoadReport:
    """Assigns every model variable whose DeepLab name is in a TF1 checkpoint.

    Args:
      model: a model from ``core.deeplab.build_model``.
      path: checkpoint prefix (``.../model.ckpt-30000``) or a directory.
      exclude: checkpoint scopes not to load (e.g. ``logits/semantic`` to keep
        a fresh last layer for another class count).

    Raises ValueError, before assigning anything, when a name exists in both
    but the shapes differ.
    """
    path = resolve_checkpoint_path(path)
    reader = tf.train.load_checkpoint(path)
    shapes = reader.get_variable_to_shape_map()
    exclude = tuple(exclude)
    variables = checkpoint_variables(model)
    mismatches = [
        f"{name}: checkpoint {shapes[name]} vs model {list(v.shape)}"
        for name, v in variables.items()
        if name in shapes and not _is_excluded(name, exclude)
        and list(shapes[name]) != list(v.shape)
    ]
    if mismatches:
        raise ValueError(
            f"shape mismatch loading {path} (exclude these scopes, e.g. with "
            f"--initialize_last_layer=false, to keep them freshly initialised):\n  "
            + "\n  ".join(mismatches))
    loaded, missing, excluded = [], [], []
    for name, variable in sorted(variables.items()):
        if _is_excluded(name, exclude):
            excluded.append(name)
        elif name in shapes:
            variable.assign(reader.get_tensor(name).astype(variable.dtype))
            loaded.append(name)
        else:
            missing.append(name)
    rest = sorted(set(shapes) - set(variables))
    training_state = [n for n in rest if any(m in n for m in _TRAINING_STATE_MARKERS)]
    unused = [n for n in rest if n not in set(training_state)]
    return LoadReport(path, loaded, missing, excluded, unused, training_state)


def save_deeplab_checkpoint(model: keras.Model, prefix: str) -> str:
    """Writes the model's weights as a TF1 name-based checkpoint under DeepLab's names.

    The inverse of ``load_deeplab_checkpoint``; written with
    ``tf.compat.v1.train.Saver`` in a graph, as DeepLab's own code writes them.
    """
    values = {name: v.numpy() for name, v in checkpoint_variables(model).items()}
    with tf.Graph().as_default():
        var_list = {name: tf.compat.v1.Variable(value, name=name.replace("/", "_"))
                    for name, value in values.items()}
        saver = tf.compat.v1.train.Saver(var_list)
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            return saver.save(session, prefix, write_meta_graph=False)


# Keras applications' MobileNetV2 (ImageNet) layer names -> our scopes.
def _keras_mobilenet_v2_layer_map() -> dict[str, str]:
    mapping = {"Conv1": "MobilenetV2.Conv", "bn_Conv1": "MobilenetV2.Conv.BatchNorm",
               "expanded_conv_depthwise": "MobilenetV2.expanded_conv.depthwise",
               "expanded_conv_depthwise_BN": "MobilenetV2.expanded_conv.depthwise.BatchNorm",
               "expanded_conv_project": "MobilenetV2.expanded_conv.project",
               "expanded_conv_project_BN": "MobilenetV2.expanded_conv.project.BatchNorm"}
    for block in range(1, 17):
        for part in ("expand", "depthwise", "project"):
            ours = f"MobilenetV2.expanded_conv_{block}.{part}"
            mapping[f"block_{block}_{part}"] = ours
            mapping[f"block_{block}_{part}_BN"] = ours + ".BatchNorm"
    return mapping


def load_keras_mobilenet_v2(model: keras.Model, source: keras.Model | None = None) -> int:
    """Copies ``keras.applications.MobileNetV2`` weights into our MobileNetV2 backbone.

    ``source`` defaults to the ImageNet model (downloaded by Keras when online;
    fails clearly offline). Returns the number of layers copied.
    """
    if getattr(model, "model_variant", None) != "mobilenet_v2":
        raise ValueError("load_keras_mobilenet_v2 needs a mobilenet_v2 model")
    if source is None:
        source = keras.applications.MobileNetV2(weights="imagenet", include_top=False,
                                                input_shape=(224, 224, 3), alpha=1.0)
    copied = 0
    for source_name, our_name in _keras_mobilenet_v2_layer_map().items():
        source_weights = source.get_layer(source_name).get_weights()
        target = model.get_layer(our_name)
        if [w.shape for w in source_weights] != [tuple(w.shape) for w in target.weights]:
            raise ValueError(f"shape mismatch copying {source_name} into {our_name}")
        target.set_weights(source_weights)
        copied += 1
    return copied


def main(argv):
    from absl import flags

    from core.deeplab import build_model

    del argv
    flags_ = flags.FLAGS
    model = build_model(flags_.model_variant, flags_.num_classes,
                        output_stride=flags_.output_stride,
                        atrous_rates=flags_.atrous_rates or None,
                        decoder_output_stride=flags_.decoder_output_stride or None)
    report = load_deeplab_checkpoint(model, flags_.checkpoint, exclude=flags_.exclude)
    print(report.summary(limit=flags_.limit))


def _define_flags():
    from absl import flags

    flags.DEFINE_string("checkpoint", None, "TF1 checkpoint prefix or directory.", required=True)
    from core.deeplab import MODEL_VARIANTS

    flags.DEFINE_enum("model_variant", "xception_65", list(MODEL_VARIANTS),
                      "Network to load into.")
    flags.DEFINE_integer("num_classes", 21, "Segmentation classes of the model.")
    flags.DEFINE_integer("output_stride", 16, "Output stride of the model.")
    flags.DEFINE_multi_integer("atrous_rates", None,
                               "ASPP rates, repeated (e.g. 6, 12, 18); none for DeepLab's "
                               "MobileNetV2 setting.")
    flags.DEFINE_integer("decoder_output_stride", 4, "4, or 0 for no decoder.")
    flags.DEFINE_multi_string("exclude", [], "Checkpoint scopes not to load.")
    flags.DEFINE_integer("limit", 20, "Names listed per category.")


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
