"""Trains DeepLabv3+ supervised, or with PseudoSeg (``--mode=pseudoseg``).

    python train.py --flagfile=configs/demo.flags

Flag names follow the reference implementation (``train_sup.py`` /
``train_wss.py``) where the concept exists there, so a reference command line
runs after dropping its TF1-only flags (``num_clones``, ``logtostderr``, ...).
The run writes to ``--train_logdir``: checkpoints (resumed on restart; every
``--save_interval_secs`` and ``--save_interval_steps``), with
``--keep_checkpoint_steps`` the network's weights at fixed steps in ``kept/``
(learning curves), ``run_config.json`` and ``flags.txt``, TensorBoard
summaries, and at the end a SavedModel in ``export/`` and, with
``--eval_split``, ``eval_<split>.json``.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging

FLAGS = flags.FLAGS

# -- what to train --------------------------------------------------------
flags.DEFINE_enum("mode", "supervised", ["supervised", "pseudoseg"],
                  "supervised: the DeepLabv3+ baseline; pseudoseg: PseudoSeg with "
                  "unlabeled (or, with --weakly, image-level labeled) data.")
flags.DEFINE_string("train_logdir", None, "Where checkpoints, summaries and the export go.")
flags.DEFINE_string("dataset", "pascal_voc_seg",
                    "pascal_voc_seg, coco, a folder dataset name (its dataset_dir holds "
                    "dataset_info.json), or tfds:NAME.")
flags.DEFINE_string("dataset_dir", None, "Directory of the TFRecords.")
flags.DEFINE_string("train_split", "train", "Pixel-labeled split.")
flags.DEFINE_string("train_split_cls", "train_aug",
                    "PseudoSeg: unlabeled (or image-level labeled with --weakly) split.")

# -- model ----------------------------------------------------------------
flags.DEFINE_string("model_variant", "xception_65",
                    "xception_65, resnet_v1_50_beta, resnet_v1_101_beta or mobilenet_v2.")
flags.DEFINE_multi_integer("atrous_rates", None,
                           "ASPP atrous rates, repeated: 6,12,18 at output stride 16, "
                           "12,24,36 at 8; none for DeepLab's MobileNetV2 setting.")
flags.DEFINE_integer("output_stride", 16, "Ratio of input to backbone output resolution.")
flags.DEFINE_multi_integer("decoder_output_stride", None,
                           "4 adds DeepLabv3+'s decoder; unset for none.")
flags.DEFINE_multi_integer("multi_grid", None, "Unit rates of the last block, e.g. 1,2,4.")
flags.DEFINE_boolean("use_dropout", True,
                     "Dropout in ASPP (0.1) and Xception's classification head (0.5).")
flags.DEFINE_boolean("sync_batch_norm", False, "Synchronise batch statistics across replicas.")
flags.DEFINE_float("batch_norm_decay", None,
                   "Moving-average decay of every batch norm. Default: DeepLab's per part "
                   "(up to 0.9997, which needs tens of thousands of steps to converge); short "
                   "runs need e.g. 0.99.")

# -- optimisation ---------------------------------------------------------
flags.DEFINE_list("train_crop_size", "513,513", "Crop height,width.")
flags.DEFINE_integer("train_batch_size", 64,
                     "Global batch (labeled; PseudoSeg draws an unlabeled batch of the same "
                     "size), split evenly across replicas.")
flags.DEFINE_integer("training_number_of_steps", 30000, "Training steps.")
flags.DEFINE_enum("learning_policy", "poly", ["poly"], "Learning-rate policy.")
flags.DEFINE_float("base_learning_rate", 0.007, "Base learning rate.")
flags.DEFINE_float("learning_power", 0.9, "Power of the poly schedule.")
flags.DEFINE_float("end_learning_rate", 0.0, "Final learning rate of the poly schedule.")
flags.DEFINE_integer("slow_start_step", 0, "Steps at slow_start_learning_rate first.")
flags.DEFINE_float("slow_start_learning_rate", 1e-4, "Learning rate during slow start.")
flags.DEFINE_enum("optimizer", "momentum", ["momentum"], "SGD with momentum.")
flags.DEFINE_float("momentum", 0.9, "Momentum.")
flags.DEFINE_float("weight_decay", 4e-5,
                   "L2 weight decay on kernels: 4e-5 for Xception and MobileNetV2, 1e-4 "
                   "for ResNet.")
flags.DEFINE_float("classification_loss_weight", 1.0,
                   "Supervised mode: weight of the classification-head loss L_x (0 trains "
                   "segmentation only).")
flags.DEFINE_boolean("fine_tune_batch_norm", True,
                     "Batch norm normalises with batch statistics in training and updates its "
                     "moving statistics; false: moving statistics in training too, never "
                     "updated, gamma and beta still trained (DeepLab's advice below a batch "
                     "of 12).")
flags.DEFINE_boolean("upsample_logits", True,
                     "L_s on logits upsampled to the crop (else labels downsampled).")
flags.DEFINE_float("last_layer_gradient_multiplier", 1.0,
                   "Gradient multiplier of the last layers.")
flags.DEFINE_boolean("last_layers_contain_logits_only", True,
                     "Last layers = the logits (and classification head) only; false adds "
                     "ASPP and the decoder.")
flags.DEFINE_string("tf_initial_checkpoint", None,
                    "Initial weights: a DeepLab TF1 checkpoint (prefix or directory), a "
                    "Keras weights file (.weights.h5), or keras:imagenet (mobilenet_v2 only: "
                    "keras.applications' ImageNet weights, downloaded by Keras). Ignored when "
                    "train_logdir already has a checkpoint (the run resumes instead).")
flags.DEFINE_boolean("initialize_last_layer", False,
                     "Also load the last layers from tf_initial_checkpoint.")
flags.DEFINE_float("min_scale_factor", 0.5, "Minimum random scale.")
flags.DEFINE_float("max_scale_factor", 2.0, "Maximum random scale.")
flags.DEFINE_float("scale_factor_step_size", 0.25, "Random scale step.")
flags.DEFINE_integer("seed", 0, "Random seed (weights and input pipelines).")
flags.DEFINE_boolean("deterministic", True,
                     "Bit-identical reruns with equal flags and seed on one machine: "
                     "Grappler's memory optimizer off (it sums some gradients in "
                     "thread-timing order) and TensorFlow op determinism (GPU kernels); "
                     "see core/determinism.py.")

# -- PseudoSeg ------------------------------------------------------------
flags.DEFINE_boolean("weakly", False,
                     "train_split_cls carries image-level labels (L_x and the CAM class mask "
                     "use them).")
flags.DEFINE_enum("image_label_source", "crop", ["crop", "record"],
                  "Weakly mode's image-level labels: crop = the classes of the mask inside "
                  "the augmented crop after CutOut (the reference); record = the records' "
                  "whole-image image/class_labels (converters' --class_labels; needed when "
                  "the split has no masks).")
flags.DEFINE_boolean("soft_pseudo_label", True, "Soft (sharpened) or hard (argmax) pseudo labels.")
flags.DEFINE_float("pseudo_label_threshold", 0.0,
                   "Confidence threshold of pseudo labels (0: keep all pixels).")
flags.DEFINE_float("unlabeled_weight", 1.0, "Weight w_u of the consistency loss L_u.")
flags.DEFINE_float("temperature", 0.5, "Sharpening temperature T.")
flags.DEFINE_enum("pseudo_src", "avg", ["avg", "att", "decoder"],
                  "Pseudo label: calibrated fusion (avg), SGC only (att), decoder only.")
flags.DEFINE_float("fusion_gamma", 0.5, "Weight of the decoder in the fusion.")
flags.DEFINE_boolean("logit_norm", True, "Shared RMS normalisation of logits before fusion.")
flags.DEFINE_boolean("use_attention", True, "Train and use the SGC layer.")
flags.DEFINE_integer("attention_dim", 128, "Key/query dimension of SGC.")
flags.DEFINE_list("hypercolumn_endpoints", None,
                  "The SGC hypercolumn's endpoints, deepest first (default: the variant's "
                  "two deepest, e.g. xception_65/exit_flow/block2,xception_65/exit_flow/block1).")
flags.DEFINE_integer("cutout_size", 100, "Side of the CutOut square of the strong view.")
flags.DEFINE_enum("weak_view_bn", "training", ["training", "inference"],
                  "training: the reference (weak view in training mode + a separate "
                  "inference pass for Grad-CAM); inference: one inference-mode pass for both.")
flags.DEFINE_enum("labeled_cam_head", "training", ["training", "inference"],
                  "Classification head behind the labeled batch's Grad-CAM (the SGC's "
                  "training input): training = the reference (training mode, Xception's "
                  "dropout active, channel weights averaged over the batch); inference = "
                  "the clean head. Equal for heads without dropout (ResNet, MobileNetV2).")

# -- infrastructure -------------------------------------------------------
flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multi_worker", "tpu"],
                  "tf.distribute strategy.")
flags.DEFINE_integer("num_cpu_replicas", 0,
                     "With --strategy=mirrored: split the CPU into this many logical devices.")
flags.DEFINE_string("tpu", None, "TPU name or grpc:// address for --strategy=tpu.")
flags.DEFINE_enum("mixed_precision", "float32", ["float32", "mixed_float16", "mixed_bfloat16"],
                  "Keras mixed-precision policy (losses and fusion stay float32).")
flags.DEFINE_boolean("jit_compile", False, "Compile the train step with XLA.")
flags.DEFINE_integer("log_steps", 10, "Print and summarise every log_steps steps.")
flags.DEFINE_integer("save_interval_secs", 1200, "Checkpoint every this many seconds.")
flags.DEFINE_integer("save_interval_steps", 0,
                     "Also checkpoint at every multiple of this many steps (0: by time "
                     "only), so a killed run loses at most this many steps.")
flags.DEFINE_integer("keep_checkpoint_steps", 0,
                     "Keep the network's weights at every multiple of this many steps in "
                     "<train_logdir>/kept/ckpt-<step>, never deleted (learning curves: "
                     "eval.py --checkpoint_path); 0: none.")
flags.DEFINE_integer("save_summaries_secs", 600, "Image summaries every this many seconds.")
flags.DEFINE_integer("max_checkpoints_to_keep", 3, "Checkpoints kept.")
flags.DEFINE_string("eval_split", None, "Evaluate this split after training (mIoU).")
flags.DEFINE_list("eval_crop_size", None,
                  "Eval crop height,width for --eval_split, or none for whole images "
                  "(default: the dataset's).")
flags.DEFINE_boolean("export", True, "Export a SavedModel to <train_logdir>/export at the end.")
flags.DEFINE_string("demo_data_dir", None,
                    "Generate the synthetic demo dataset here first if it is missing "
                    "(datasets/synthetic.py).")

flags.mark_flag_as_required("train_logdir")


def _crop(values, name, default=None):
    from core.evaluation import parse_crop

    try:
        crop = parse_crop(values, default)
    except ValueError as error:
        raise app.UsageError(f"--{name}: {error}") from error
    if name == "train_crop_size" and crop is None:
        raise app.UsageError("--train_crop_size must be height,width")
    return crop


def validate_flags(num_replicas: int):
    """Clear errors for flag combinations that cannot work."""
    from core.deeplab import MODEL_VARIANTS

    if FLAGS.tf_initial_checkpoint == "keras:imagenet" and FLAGS.model_variant != "mobilenet_v2":
        raise app.UsageError("--tf_initial_checkpoint=keras:imagenet is for "
                             "--model_variant=mobilenet_v2 only")
    if FLAGS.model_variant not in MODEL_VARIANTS:
        raise app.UsageError(f"--model_variant={FLAGS.model_variant!r} is unknown; expected "
                             f"one of {', '.join(MODEL_VARIANTS)}")
    crop = _crop(FLAGS.train_crop_size, "train_crop_size")
    for size in crop:
        if (size - 1) % FLAGS.output_stride:
            raise app.UsageError(
                f"--train_crop_size={','.join(map(str, crop))} does not suit "
                f"--output_stride={FLAGS.output_stride}: each side must be a multiple of the "
                f"output stride plus one (e.g. {FLAGS.output_stride * ((size - 1) // FLAGS.output_stride) + 1} "
                f"or {FLAGS.output_stride * ((size - 1) // FLAGS.output_stride + 1) + 1}), so "
                f"features align with the pixels")
    if FLAGS.train_batch_size % num_replicas:
        raise app.UsageError(
            f"--train_batch_size={FLAGS.train_batch_size} is not divisible by the "
            f"{num_replicas} replicas")
    decoder = FLAGS.decoder_output_stride or []
    if decoder and decoder != [4]:
        raise app.UsageError(f"--decoder_output_stride must be 4 (or unset), got {decoder}")
    for name in ("save_interval_steps", "keep_checkpoint_steps"):
        if getattr(FLAGS, name) < 0:
            raise app.UsageError(f"--{name} must be >= 0 (0: off), got {getattr(FLAGS, name)}")
    if FLAGS.training_number_of_steps <= FLAGS.slow_start_step:
        raise app.UsageError("--training_number_of_steps must exceed --slow_start_step")
    _crop(FLAGS.eval_crop_size, "eval_crop_size")
    return crop


def network_config(info):
    return dict(
        model_variant=FLAGS.model_variant,
        num_classes=info.num_classes,
        output_stride=FLAGS.output_stride,
        atrous_rates=list(FLAGS.atrous_rates) if FLAGS.atrous_rates else None,
        decoder_output_stride=4 if FLAGS.decoder_output_stride else None,
        multi_grid=list(FLAGS.multi_grid) if FLAGS.multi_grid else None,
    )


def build_trainer(network, info, crop):
    """The supervised or PseudoSeg trainer around ``network``."""
    from core.trainer_model import SupervisedSegmenter, freeze_batch_norm, last_layer_scopes

    if not FLAGS.fine_tune_batch_norm:
        freeze_batch_norm(network)
    common = dict(
        weight_decay=FLAGS.weight_decay,
        last_layer_gradient_multiplier=FLAGS.last_layer_gradient_multiplier,
        last_layers=last_layer_scopes(network, FLAGS.last_layers_contain_logits_only),
        upsample_logits=FLAGS.upsample_logits,
    )
    if FLAGS.mode == "supervised":
        return SupervisedSegmenter(network, info.num_classes, info.ignore_label,
                                   classification_loss_weight=FLAGS.classification_loss_weight,
                                   **common)
    from wss.pseudoseg import PseudoSegTrainer

    return PseudoSegTrainer(network, info.num_classes, info.ignore_label,
                            sync_batch_norm=FLAGS.sync_batch_norm, **pseudoseg_settings(),
                            **common)


def pseudoseg_settings():
    """The method's settings of ``PseudoSegTrainer``, as the run config records
    them (``wss.pseudo_label_report`` rebuilds the trainer from them)."""
    return dict(
        weakly=FLAGS.weakly, soft_pseudo_label=FLAGS.soft_pseudo_label,
        pseudo_label_threshold=FLAGS.pseudo_label_threshold,
        unlabeled_weight=FLAGS.unlabeled_weight, temperature=FLAGS.temperature,
        pseudo_src=FLAGS.pseudo_src, logit_norm=FLAGS.logit_norm,
        fusion_gamma=FLAGS.fusion_gamma, use_attention=FLAGS.use_attention,
        attention_dim=FLAGS.attention_dim,
        hypercolumn_endpoints=FLAGS.hypercolumn_endpoints,
        weak_view_bn=FLAGS.weak_view_bn,
        labeled_cam_head=FLAGS.labeled_cam_head,
        sgc_batch_norm_decay=FLAGS.batch_norm_decay or 0.999)


def dataset_fn(info, crop, start_step=0):
    """``input_context -> tf.data.Dataset`` of training batches (global batch split
    per replica), for ``strategy.distribute_datasets_from_function``, starting at
    the batches of ``start_step`` (a resumed run reads what an uninterrupted run
    would read next)."""
    import tensorflow as tf

    from datasets import input_pipeline

    augmentation = dict(min_scale_factor=FLAGS.min_scale_factor,
                        max_scale_factor=FLAGS.max_scale_factor,
                        scale_factor_step_size=FLAGS.scale_factor_step_size)

    def make(input_context=None):
        seed = None if FLAGS.seed is None else FLAGS.seed + (
            input_context.input_pipeline_id if input_context else 0)
        labeled = input_pipeline.labeled_dataset(
            info, FLAGS.dataset_dir, FLAGS.train_split, crop, FLAGS.train_batch_size,
            seed=seed, input_context=input_context, start_step=start_step, **augmentation)
        if FLAGS.mode == "supervised":
            return labeled
        unlabeled = input_pipeline.unlabeled_dataset(
            info, FLAGS.dataset_dir, FLAGS.train_split_cls, crop, FLAGS.train_batch_size,
            cutout_size=FLAGS.cutout_size, weakly=FLAGS.weakly,
            image_label_source=FLAGS.image_label_source,
            seed=None if seed is None else seed + 7919, input_context=input_context,
            start_step=start_step, **augmentation)
        return tf.data.Dataset.zip({"labeled": labeled, "unlabeled": unlabeled})

    return make


def initial_checkpoint_loader(network):
    """A function that initialises ``network`` from ``--tf_initial_checkpoint``
    (or leaves it at random initialisation without one), called by
    ``training.fit`` when the run does not resume.

    It prints what it loaded (counts of loaded, missing, excluded and unused
    variables) and records the same in the ``initialization`` section of
    ``<train_logdir>/run_config.json``.
    """
    path = FLAGS.tf_initial_checkpoint
    record = dict(tf_initial_checkpoint=path or None,
                  initialize_last_layer=FLAGS.initialize_last_layer,
                  num_model_variables=len(network.weights))

    def load():
        if not path:
            record.update(source="random", loaded=0)
            message = "starting from random initialisation (no --tf_initial_checkpoint)"
        elif path == "keras:imagenet":
            from core.checkpoints import load_keras_mobilenet_v2

            try:
                copied = load_keras_mobilenet_v2(network)
            except Exception as error:  # offline, or a proxy refusing the download
                raise ValueError(
                    f"--tf_initial_checkpoint=keras:imagenet could not get Keras's "
                    f"MobileNetV2 ImageNet weights: {error}") from error
            record.update(source="keras:imagenet", loaded_layers=copied)
            message = (f"initialised {copied} MobileNetV2 layers from keras.applications "
                       f"(ImageNet)")
        elif path.endswith(".weights.h5") or path.endswith(".keras"):
            network.load_weights(path)  # raises unless every variable matches
            record.update(source="keras_weights", loaded=len(network.weights), missing=0,
                          excluded=0, unused=0)
            message = f"initialised the network from Keras weights {path}"
        else:
            from core.checkpoints import load_deeplab_checkpoint
            from core.trainer_model import last_layer_scopes

            exclude = []
            if not FLAGS.initialize_last_layer:
                exclude = [s.replace(".", "/") for s in
                           last_layer_scopes(network, FLAGS.last_layers_contain_logits_only)]
            report = load_deeplab_checkpoint(network, path, exclude=exclude)
            print(report.summary(), flush=True)
            record.update(source="deeplab_checkpoint", checkpoint=report.path,
                          loaded=len(report.loaded), missing=len(report.missing),
                          excluded=len(report.excluded), unused=len(report.unused),
                          training_state_ignored=len(report.training_state),
                          missing_names=report.missing, excluded_names=report.excluded,
                          unused_names=report.unused)
            message = (f"initialised from {report.path}: {len(report.loaded)} variables "
                       f"loaded, {len(report.missing) + len(report.excluded)} kept fresh "
                       f"({len(report.missing)} missing from the checkpoint, "
                       f"{len(report.excluded)} last-layer variables excluded), "
                       f"{len(report.unused)} checkpoint variables unused")
        from core import distribute
        from core.run_config import update_run_config

        if distribute.is_chief():
            update_run_config(FLAGS.train_logdir, initialization=record)
        return message

    return load


def main(argv):
    del argv
    from core import distribute

    # Logical devices and strategies must exist before any other TF op.
    strategy = distribute.make_strategy(FLAGS.strategy, FLAGS.num_cpu_replicas, FLAGS.tpu)
    crop = validate_flags(strategy.num_replicas_in_sync)
    from core import determinism

    determinism.configure(FLAGS.deterministic)

    import keras
    import tensorflow as tf

    from core import training
    from core.run_config import write_run_config
    from datasets.dataset_info import get_dataset_info

    if FLAGS.demo_data_dir:
        from datasets import synthetic

        synthetic.ensure_demo_dataset(FLAGS.demo_data_dir)
    if not FLAGS.dataset_dir:
        raise app.UsageError("--dataset_dir is required")
    tf.get_logger().setLevel("WARNING")
    keras.utils.set_random_seed(FLAGS.seed)
    if FLAGS.mixed_precision != "float32":
        keras.mixed_precision.set_global_policy(FLAGS.mixed_precision)
    try:
        info = get_dataset_info(FLAGS.dataset, FLAGS.dataset_dir)
        trainer, network, config = build_everything(strategy, info, crop)
        start_step = training.checkpoint_step(FLAGS.train_logdir)
        make_dataset = dataset_fn(info, crop, start_step)
        sample_batch = next(iter(make_dataset()))  # fails early on missing records
        dataset = strategy.distribute_datasets_from_function(make_dataset)
    except (FileNotFoundError, ValueError) as error:
        print(f"ERROR: {error}", file=sys.stderr)
        sys.exit(1)

    run = dict(model=config, dataset=dict(name=info.name, dataset_dir=FLAGS.dataset_dir,
                                          num_classes=info.num_classes,
                                          ignore_label=info.ignore_label),
               mode=FLAGS.mode, train_crop_size=list(crop))
    if FLAGS.mode == "pseudoseg":
        run["pseudoseg"] = pseudoseg_settings()
    if distribute.is_chief():
        write_run_config(FLAGS.train_logdir, run, FLAGS.flags_into_string(),
                         keep=("initialization",))
    try:
        training.fit(trainer, dataset, FLAGS.train_logdir,
                     total_steps=FLAGS.training_number_of_steps, log_steps=FLAGS.log_steps,
                     save_interval_secs=FLAGS.save_interval_secs,
                     save_summaries_secs=FLAGS.save_summaries_secs,
                     max_to_keep=FLAGS.max_checkpoints_to_keep,
                     save_interval_steps=FLAGS.save_interval_steps,
                     keep_checkpoint_steps=FLAGS.keep_checkpoint_steps,
                     initialize_fn=initial_checkpoint_loader(network),
                     colormap=info.colormap, sample_batch=sample_batch,
                     input_start_step=start_step)
    except (training.NonFiniteLossError, training.InitializationError) as error:
        print(f"ERROR: {error}", file=sys.stderr)
        sys.exit(1)
    if not distribute.is_chief():
        return
    finish(network, info)


def build_everything(strategy, info, crop):
    """Network, trainer and optimizer, built under the strategy's scope."""
    import keras
    import tensorflow as tf

    from core.deeplab import build_model
    from core.schedule import PolyWithSlowStart

    config = network_config(info)
    with strategy.scope():
        network = build_model(**config, sync_batch_norm=FLAGS.sync_batch_norm,
                              batch_norm_decay=FLAGS.batch_norm_decay,
                              use_dropout=FLAGS.use_dropout)
        trainer = build_trainer(network, info, crop)
        schedule = PolyWithSlowStart(
            FLAGS.base_learning_rate, FLAGS.training_number_of_steps, FLAGS.learning_power,
            FLAGS.slow_start_step, FLAGS.slow_start_learning_rate, FLAGS.end_learning_rate)
        optimizer = keras.optimizers.SGD(schedule, momentum=FLAGS.momentum)
        if FLAGS.mixed_precision == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        trainer.compile(optimizer=optimizer, jit_compile=FLAGS.jit_compile)
        trainer.prepare(tf.zeros((1, *crop, 3)))
        optimizer.build(trainer.trainable_variables)
    return trainer, network, config


def finish(network, info):
    """Export and evaluation at the end of training (chief only)."""
    if FLAGS.export:
        from core.export import export_saved_model

        export_dir = os.path.join(FLAGS.train_logdir, "export")
        export_saved_model(network, export_dir, info)
        print(f"exported SavedModel to {export_dir}")
    if FLAGS.eval_split:
        from core import evaluation, training

        eval_crop = _crop(FLAGS.eval_crop_size, "eval_crop_size", info.eval_crop_size)
        result = evaluation.evaluate_network(network, info, FLAGS.dataset_dir,
                                             FLAGS.eval_split, eval_crop_size=eval_crop)
        result["checkpoint"] = training.latest_checkpoint(FLAGS.train_logdir)
        path = os.path.join(FLAGS.train_logdir, f"eval_{FLAGS.eval_split}.json")
        evaluation.write_result(result, path)
        print(evaluation.format_table(result, info.class_names))


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    app.run(main)
