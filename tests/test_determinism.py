"""Same flags and seed, same run: train.py in separate processes.

Issue 12: Grappler's memory optimizer rewrote gradient sums of the PseudoSeg
step into accumulations in thread-timing order (core/determinism.py), so two
runs with the same seed diverged from the first step. The rewrite happens at
the demo's shapes (MobileNetV2 with decoder, batch 8, crop 81) and not at
tiny ones, so these runs use the demo's shapes: without ``--deterministic``
their weights differ after one step (checked by the control below).

Each pair runs side by side, one of the two with checkpoints and image
summaries every step (timers at 0 s), the other with neither before the end,
so wall-clock timers cannot change the numbers either.
"""

import glob
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tensorflow as tf

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
STEPS = 3
EVERY_STEP = ["--save_interval_secs=0", "--save_summaries_secs=0"]
NEVER = ["--save_interval_secs=100000", "--save_summaries_secs=100000"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from datasets import synthetic

    path = tmp_path_factory.mktemp("synthetic")
    synthetic.generate(str(path), num_train=32, num_val=2, labeled_fraction=2, height=64,
                       width=64, seed=4, verbose=False)
    return path


def _args(data_dir, logdir, *extra):
    return [sys.executable, "train.py", f"--train_logdir={logdir}", "--mode=pseudoseg",
            "--dataset=synthetic_shapes", f"--dataset_dir={data_dir}", "--train_split=labeled",
            "--train_split_cls=unlabeled", "--model_variant=mobilenet_v2",
            "--decoder_output_stride=4", "--train_crop_size=81,81", "--train_batch_size=8",
            "--cutout_size=24", "--batch_norm_decay=0.99", "--base_learning_rate=0.1",
            f"--training_number_of_steps={STEPS}", "--log_steps=1", "--export=false", "--seed=5",
            *extra]


def _start(args):
    return subprocess.Popen(args, cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _finish(process):
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-3000:]
    return output


def _digest(output):
    return re.search(r"final weights digest: (\w+)", output).group(1)


def _logged(logdir):
    """Every logged training value by (tag, step), except the timing."""
    values = {}
    for path in glob.glob(os.path.join(logdir, "train", "events.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag.startswith("train/") and value.tag != "train/seconds_per_step":
                    values[value.tag, event.step] = float(tf.make_ndarray(value.tensor))
    return values


def _killed_after_first_checkpoint_then_resumed(args, logdir):
    process = _start(args)
    deadline = time.monotonic() + 400
    while not glob.glob(str(logdir / "ckpt-*.index")) and time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"training ended before its first checkpoint:\n{process.stdout.read()}")
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    return _start(args)


def test_pseudoseg_rerun_and_resumed_run_equal_the_first_run(data_dir, tmp_path):
    """Run A every-step timers, killed after its first checkpoint and resumed;
    run B untimed and uninterrupted: equal per-step logs and final weights."""
    a, b = tmp_path / "a", tmp_path / "b"
    first = _start(_args(data_dir, b, *NEVER))
    resumed = _killed_after_first_checkpoint_then_resumed(_args(data_dir, a, *EVERY_STEP), a)
    out_b, out_a = _finish(first), _finish(resumed)
    assert "resumed from" in out_a
    assert _digest(out_a) == _digest(out_b)
    logged_a, logged_b = _logged(str(a)), _logged(str(b))
    assert {"train/loss_sgc", "train/loss_consistency", "train/acc_pseudo"} <= {
        tag for tag, _ in logged_b}
    resumed_steps = {key: v for key, v in logged_a.items() if key[1] == STEPS}
    assert resumed_steps and all(logged_b[key] == v for key, v in resumed_steps.items())
    assert logged_a.keys() <= logged_b.keys()
    assert all(logged_b[key] == value for key, value in logged_a.items())


def test_weakly_reruns_are_identical_and_the_memory_optimizer_made_them_differ(data_dir,
                                                                               tmp_path):
    weakly = ["--weakly"]
    runs = {name: _start(_args(data_dir, tmp_path / name, *weakly, *timers, *extra))
            for name, timers, extra in (("a", EVERY_STEP, []), ("b", NEVER, []),
                                        ("control", NEVER, ["--deterministic=false"]))}
    outputs = {name: _finish(process) for name, process in runs.items()}
    assert _digest(outputs["a"]) == _digest(outputs["b"])
    assert _logged(str(tmp_path / "a")) == _logged(str(tmp_path / "b"))
    # The control: TensorFlow's default (memory optimizer on) at these shapes
    # sums gradients in thread-timing order; run twice here (b's deterministic
    # sums against the control's), the weights differ.
    assert _digest(outputs["control"]) != _digest(outputs["b"])
