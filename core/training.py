"""The training loop around ``model.fit``: checkpoints that resume, progress,
TensorBoard summaries, and a stop on non-finite losses.

* Checkpoints: ``tf.train.CheckpointManager`` in ``train_logdir``, saved every
  ``save_interval_secs`` seconds, every ``save_interval_steps`` steps (when
  set) and at the end, the last ``max_to_keep`` kept. The
  checkpoint holds the trainer (network and any method layers), the
  optimizer (its iteration count and momentum slots) and the dropout layers'
  seed states, so a restarted run resumes at the saved step with the
  learning-rate schedule where it was and the same dropout masks; with input
  pipelines started at that step (``train.py``), it continues exactly as the
  uninterrupted run.
* Kept checkpoints (``keep_checkpoint_steps``): the network's weights at every
  multiple of that many steps, written to ``<train_logdir>/kept/ckpt-<step>``
  and never deleted (learning curves: ``eval.py --checkpoint_path``). Each is
  written before any rolling checkpoint of the same step, so every rolling
  checkpoint has the kept ones of its past, and a resumed run writes the
  kept checkpoint of its start step if it is missing.
* A non-finite loss stops training with ``NonFiniteLossError`` naming the
  step; nothing is saved after it, so the last good checkpoint stays the latest.
* Only the chief writes checkpoints and summaries (``core.distribute``); every
  worker restores from ``train_logdir``, which must be a shared file system
  (e.g. a bucket) when workers run on several machines. Checkpoints hold the
  network, the method's layers and the optimizer, not metric trackers, so
  saving involves no collective operation.
"""

from __future__ import annotations

import math
import os
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from core import distribute


def as_float(value) -> float:
    """A logged value (scalar, or shape [1] under multi-worker training) as a float."""
    return float(np.asarray(value).reshape(-1)[0])


class NonFiniteLossError(RuntimeError):
    """Raised when a training step produced a NaN or Inf loss."""


class InitializationError(RuntimeError):
    """Raised when the initial weights cannot be loaded (bad path, shapes, offline)."""


def random_states(trainer: keras.Model) -> dict:
    """The state variables of the trainer's Keras seed generators (dropout),
    keyed by path. Keras lists them among a layer's variables but does not put
    them in a ``tf.train.Checkpoint``; saving them lets a resumed run draw the
    dropout masks the uninterrupted run would draw."""
    return {v.path.replace("/", "."): v.value for v in trainer.variables
            if v.path.endswith("seed_generator_state")}


def make_checkpoint(trainer: keras.Model, optimizer) -> tf.train.Checkpoint:
    return tf.train.Checkpoint(optimizer=optimizer, random_states=random_states(trainer),
                               **trainer.checkpoint_items())


def network_checkpoint(network: keras.Model) -> tf.train.Checkpoint:
    """A checkpoint object that restores only the network from a training checkpoint."""
    return tf.train.Checkpoint(network=network)


KEPT_DIR = "kept"  # <train_logdir>/kept/ckpt-<step>: the kept network checkpoints


def kept_checkpoints(logdir: str) -> dict:
    """``{step: checkpoint prefix}`` of the complete kept checkpoints of a run
    (``<logdir>/kept/ckpt-<step>.index`` present; it is renamed in place last)."""
    kept = {}
    for path in tf.io.gfile.glob(os.path.join(logdir, KEPT_DIR, "ckpt-*.index")):
        number = os.path.basename(path)[len("ckpt-"):-len(".index")]
        if number.isdigit():
            kept[int(number)] = path[:-len(".index")]
    return dict(sorted(kept.items()))


class CheckpointSaver(keras.callbacks.Callback):
    """Saves every ``interval_secs`` seconds, every ``interval_steps`` steps (0:
    never by steps) and at the end of training (if it ended well)."""

    def __init__(self, manager: tf.train.CheckpointManager, step_fn, interval_secs: float,
                 interval_steps: int = 0):
        super().__init__()
        self.manager = manager
        self.step_fn = step_fn
        self.interval_secs = interval_secs
        self.interval_steps = interval_steps
        self._last_save = time.monotonic()
        self.failed = False

    def save(self):
        step = int(self.step_fn())
        path = self.manager.save(checkpoint_number=step)
        self._last_save = time.monotonic()
        logging.info("saved checkpoint %s", path)
        return path

    def on_train_batch_end(self, batch, logs=None):
        if self.failed:
            return
        if time.monotonic() - self._last_save >= self.interval_secs or (
                self.interval_steps and int(self.step_fn()) % self.interval_steps == 0):
            self.save()


class KeptCheckpoints(keras.callbacks.Callback):
    """Writes the network's weights at every multiple of ``every_steps`` steps to
    ``<logdir>/kept/ckpt-<step>`` (a ``tf.train.Checkpoint(network=...)``, which
    ``network_checkpoint`` restores); these are never deleted. Written under a
    temporary prefix and renamed, the index last, so a listed one is complete.
    Must run before ``CheckpointSaver`` in the callback list."""

    def __init__(self, network: keras.Model, logdir: str, every_steps: int, step_fn):
        super().__init__()
        self.checkpoint = network_checkpoint(network)
        # Created now so that write() records it: restore() creates one and eval.py
        # asserts that every object it has was found in the checkpoint.
        self.checkpoint.save_counter  # pylint: disable=pointless-statement
        self.directory = os.path.join(logdir, KEPT_DIR)
        self.every_steps = every_steps
        self.step_fn = step_fn
        self.failed = False

    def write(self, step: int):
        tf.io.gfile.makedirs(self.directory)
        final = os.path.join(self.directory, f"ckpt-{step}")
        temporary = os.path.join(self.directory, f"tmp-ckpt-{step}")
        written = self.checkpoint.write(temporary)
        files = tf.io.gfile.glob(written + ".*")
        for path in sorted(files, key=lambda p: p.endswith(".index")):  # index last
            tf.io.gfile.rename(path, final + path[len(written):], overwrite=True)
        logging.info("kept checkpoint %s", final)

    def on_train_begin(self, logs=None):
        step = int(self.step_fn())
        if step > 0 and step % self.every_steps == 0 and step not in kept_checkpoints(
                os.path.dirname(self.directory)):
            self.write(step)

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.step_fn())
        if not self.failed and step % self.every_steps == 0:
            self.write(step)


class NonFiniteLossGuard(keras.callbacks.Callback):
    """Stops at the first non-finite loss, before anything else saves."""

    def __init__(self, step_fn, saver: CheckpointSaver | None = None, also_stop=()):
        super().__init__()
        self.step_fn = step_fn
        self.saver = saver
        self.also_stop = tuple(also_stop)

    def on_train_batch_end(self, batch, logs=None):
        loss = as_float((logs or {}).get("loss", 0.0))
        if not math.isfinite(loss):
            if self.saver is not None:
                self.saver.failed = True
            for callback in self.also_stop:
                callback.failed = True
            last = self.saver.manager.latest_checkpoint if self.saver else None
            raise NonFiniteLossError(
                f"loss is {loss} at step {int(self.step_fn())}; training stopped. "
                f"The last good checkpoint is {last or '(none saved yet)'}.")


class ResumedProgbar(keras.utils.Progbar):
    """Keras's progress bar, timed from the step training resumed at.

    Keras estimates seconds per step as the time since the bar was made over
    the bar's current value, so a run resumed at step k of n showed an ETA as
    if k steps had run in the first seconds. Here a step's duration is the time
    since the bar was made over the steps done since ``start_step``."""

    def __init__(self, target: int, start_step: int, **kwargs):
        super().__init__(target, **kwargs)
        self.start_step = start_step

    def _estimate_step_duration(self, current, now):
        done = current - self.start_step
        return (now - self._start) / done if done > 0 else 0


class ProgressLogger(keras.callbacks.Callback):
    """A progress bar over global steps (resumes at the restored step), every
    ``log_steps`` steps: the logged values, learning rate, seconds per step and
    ETA, written to TensorBoard too; metric trackers reset after each line so
    values are means over the last ``log_steps`` steps."""

    def __init__(self, total_steps: int, log_steps: int, step_fn, writer=None, verbose=True):
        super().__init__()
        self.total_steps = total_steps
        self.log_steps = max(1, log_steps)
        self.step_fn = step_fn
        self.writer = writer
        self.verbose = verbose
        self._bar = None
        self._start = None

    def on_train_begin(self, logs=None):
        self._start_step = int(self.step_fn())
        self._start = time.monotonic()
        if self.verbose:
            self._bar = ResumedProgbar(self.total_steps, self._start_step,
                                       stateful_metrics=None, unit_name="step")
            self._bar.update(self._start_step)

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.step_fn())
        if step % self.log_steps and step != self.total_steps:
            return
        logs = {k: as_float(v) for k, v in (logs or {}).items()}
        done = step - self._start_step
        seconds_per_step = (time.monotonic() - self._start) / max(done, 1)
        if self._bar is not None:
            # The values are already means over the window: show them as they are.
            self._bar.stateful_metrics = set(logs)
            self._bar.update(step, values=list(logs.items()), finalize=False)
        else:
            eta = seconds_per_step * (self.total_steps - step)
            values = " ".join(f"{k}={v:.4g}" for k, v in logs.items())
            logging.info("step %d/%d %s (%.2f s/step, ETA %.0f s)", step, self.total_steps,
                         values, seconds_per_step, eta)
        if self.writer is not None:
            with self.writer.as_default(step=step):
                for name, value in logs.items():
                    tf.summary.scalar(f"train/{name}", value)
                tf.summary.scalar("train/seconds_per_step", seconds_per_step)
        self.model.reset_metrics()

    def on_train_end(self, logs=None):
        if self._bar is not None:
            print(flush=True)


def colorize(index_map, colormap: np.ndarray):
    """``[N, H, W, 1]`` class indices -> ``[N, H, W, 3]`` uint8 via ``colormap``
    (indices outside the map, e.g. the ignore label, are white)."""
    index_map = np.asarray(index_map)[..., 0].astype(np.int64)
    palette = np.concatenate([colormap.astype(np.uint8),
                              np.full((1, 3), 255, np.uint8)], axis=0)
    index_map = np.where((index_map >= 0) & (index_map < len(colormap)), index_map,
                         len(colormap))
    return palette[index_map]


class ImageSummaries(keras.callbacks.Callback):
    """Every ``interval_secs``: the trainer's ``summaries`` (image panels and
    histograms) on a fixed batch."""

    def __init__(self, sample_batch, writer, colormap, step_fn, interval_secs, max_images=3):
        super().__init__()
        self.sample_batch = sample_batch
        self.writer = writer
        self.colormap = colormap
        self.step_fn = step_fn
        self.interval_secs = interval_secs
        self.max_images = max_images
        self._last = -float("inf")
        self._summary_fn = None

    def write(self):
        step = int(self.step_fn())
        if self._summary_fn is None:  # traced once, not on every call
            self._summary_fn = tf.function(self.model.summaries)
        images, histograms = self._summary_fn(self.sample_batch)
        with self.writer.as_default(step=step):
            for name, values in histograms.items():
                tf.summary.histogram(name, values)
            for name, value in images.items():
                value = np.asarray(value)[: self.max_images]
                if value.shape[-1] == 1 and value.dtype.kind in "iu":
                    value = colorize(value, self.colormap)
                elif value.dtype.kind == "f" and value.shape[-1] == 3:
                    value = np.clip(value, 0, 255).astype(np.uint8)
                elif value.dtype.kind == "f":  # a heat map in [0, 1]
                    value = (np.clip(value[..., :1], 0, 1) * 255).astype(np.uint8)
                    value = np.repeat(value, 3, axis=-1)
                tf.summary.image(f"images/{name}", value, max_outputs=self.max_images)
        self._last = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        if time.monotonic() - self._last >= self.interval_secs:
            self.write()


def restore_or_initialize(checkpoint, manager, initialize_fn=None) -> str:
    """Restores the latest checkpoint in the manager's directory; otherwise
    calls ``initialize_fn`` (e.g. load ImageNet weights). Returns what happened."""
    if manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        return f"resumed from {manager.latest_checkpoint}"
    if initialize_fn is not None:
        try:
            return initialize_fn()
        except (OSError, ValueError) as error:
            raise InitializationError(str(error)) from error
    return "starting from random initialisation"


def latest_checkpoint(logdir: str) -> str | None:
    return tf.train.latest_checkpoint(logdir)


def checkpoint_step(logdir: str) -> int:
    """The step of the latest checkpoint in ``logdir`` (``ckpt-<step>``; 0 when
    there is none): where a restarted run resumes, known before restoring so
    the input pipelines can start there."""
    path = latest_checkpoint(logdir)
    if path is None:
        return 0
    number = os.path.basename(path).rpartition("-")[2]
    if not number.isdigit():
        raise ValueError(f"cannot read the step of checkpoint {path} (expected ckpt-<step>)")
    return int(number)


def fit(trainer: keras.Model, dataset, logdir: str, *, total_steps: int, log_steps: int = 10,
        save_interval_secs: float = 1200, save_summaries_secs: float = 600,
        max_to_keep: int = 3, initialize_fn=None, colormap=None, sample_batch=None,
        verbose: bool = True, input_start_step: int | None = None,
        save_interval_steps: int = 0, keep_checkpoint_steps: int = 0) -> int:
    """Trains ``trainer`` (compiled, optimizer built) on ``dataset`` up to ``total_steps``.

    With ``colormap`` and a (non-distributed) ``sample_batch``, image panels
    and histograms from ``trainer.summaries`` go to TensorBoard every
    ``save_summaries_secs``.

    Resumes from the latest checkpoint in ``logdir`` (else calls
    ``initialize_fn``), saves checkpoints, writes summaries, and saves a
    final checkpoint. Returns the final step. ``input_start_step``: the step
    ``dataset`` was built to start at; a different restored step is an error
    (the batches would not be the ones an uninterrupted run sees).
    ``save_interval_steps``: also checkpoint at every multiple of it (0: by
    time only). ``keep_checkpoint_steps``: keep the network's weights at every
    multiple of it in ``<logdir>/kept/`` (0: none).
    """
    optimizer = trainer.optimizer
    checkpoint = make_checkpoint(trainer, optimizer)
    # Every worker restores from logdir (a shared file system on a cluster);
    # only the chief writes there.
    manager = tf.train.CheckpointManager(checkpoint, logdir, max_to_keep=max_to_keep)
    message = restore_or_initialize(checkpoint, manager, initialize_fn)
    start = int(optimizer.iterations.numpy())
    if input_start_step is not None and start != input_start_step:
        raise RuntimeError(
            f"the restored step {start} differs from the step {input_start_step} the input "
            f"pipelines were built to start at (checkpoint {manager.latest_checkpoint})")
    logging.info("%s; step %d of %d", message, start, total_steps)
    if verbose:
        print(f"{message}; step {start} of {total_steps}", flush=True)
    if start >= total_steps:
        return start

    def step_fn():
        return optimizer.iterations.numpy()

    writer = tf.summary.create_file_writer(os.path.join(logdir, "train")) \
        if distribute.is_chief() else None
    chief = distribute.is_chief()
    saver = CheckpointSaver(manager, step_fn, save_interval_secs, save_interval_steps)
    kept = ([KeptCheckpoints(trainer.checkpoint_items()["network"], logdir,
                             keep_checkpoint_steps, step_fn)]
            if chief and keep_checkpoint_steps else [])
    callbacks = [NonFiniteLossGuard(step_fn, saver, kept)] + kept + (
        [saver] if chief else []) + [
        ProgressLogger(total_steps, log_steps, step_fn, writer, verbose=verbose and chief)]
    if writer is not None and colormap is not None and sample_batch is not None:
        callbacks.append(ImageSummaries(sample_batch, writer, np.asarray(colormap), step_fn,
                                        save_summaries_secs))
    try:
        trainer.fit(dataset, epochs=1, steps_per_epoch=total_steps - start, verbose=0,
                    callbacks=callbacks, shuffle=False)
    finally:
        if writer is not None:
            writer.flush()
    if chief:
        saver.save()
    if verbose:
        print(f"final weights digest: {weights_digest(trainer)}", flush=True)
    return int(step_fn())


def weights_digest(trainer) -> str:
    """SHA-256 of every checkpointed weight, in path order: equal on all workers
    of a correct multi-worker run."""
    import hashlib

    digest = hashlib.sha256()
    items = trainer.checkpoint_items()
    weights = [w for layer in items.values() for w in layer.weights]
    for weight in sorted(weights, key=lambda w: w.path):
        digest.update(weight.path.encode())
        digest.update(np.ascontiguousarray(weight.numpy()).tobytes())
    return digest.hexdigest()[:16]

