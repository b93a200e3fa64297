"""The configuration a training run writes next to its checkpoints.

``<train_logdir>/run_config.json`` holds what evaluation, export and
prediction need to rebuild the network without the training flags:
the model arguments of ``core.deeplab.build_model``, the dataset
descriptor's name, directory, class count and ignore label, and for PseudoSeg
runs the method settings of ``wss.pseudoseg.PseudoSegTrainer`` (``pseudoseg``),
and what the run started from (``initialization``: the initial checkpoint and
the counts of loaded, missing, excluded and unused variables; written when
training starts from it and kept when the run resumes).
``<train_logdir>/flags.txt`` holds every resolved training flag as a
flagfile, so ``python train.py --flagfile=<train_logdir>/flags.txt`` repeats
the run.
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

RUN_CONFIG = "run_config.json"
FLAGS_FILE = "flags.txt"


def write_run_config(logdir: str, config: dict, flags_text: str | None = None,
                     keep: tuple[str, ...] = ()):
    """Writes ``run_config.json`` (and ``flags.txt``) atomically.

    Sections named in ``keep`` that ``config`` lacks are carried over from an
    existing ``run_config.json`` (e.g. ``initialization`` when a run resumes).
    """
    tf.io.gfile.makedirs(logdir)
    path = os.path.join(logdir, RUN_CONFIG)
    if keep and tf.io.gfile.exists(path):
        existing = read_run_config(logdir)
        config = {**{k: existing[k] for k in keep if k in existing}, **config}
    for name, text in ((RUN_CONFIG, json.dumps(config, indent=2, sort_keys=True)),
                       (FLAGS_FILE, flags_text)):
        if text is None:
            continue
        path = os.path.join(logdir, name)
        with tf.io.gfile.GFile(path + ".tmp", "w") as f:
            f.write(text)
        tf.io.gfile.rename(path + ".tmp", path, overwrite=True)


def update_run_config(logdir: str, **sections):
    """Sets top-level sections of an existing ``run_config.json`` atomically."""
    config = read_run_config(logdir)
    config.update(sections)
    write_run_config(logdir, config)


def read_run_config(logdir: str) -> dict:
    path = os.path.join(logdir, RUN_CONFIG)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(
            f"{path} not found: --checkpoint_dir must be a train_logdir written by train.py")
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def build_network(config: dict, **overrides):
    """``core.deeplab.build_model`` from a run config's ``model`` section."""
    from core.deeplab import build_model

    model_args = dict(config["model"])
    model_args.update(overrides)
    return build_model(**model_args)
