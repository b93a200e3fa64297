"""train.py, eval.py, export.py and predict.py as a user runs them (subprocesses)
on a tiny generated dataset."""

import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from datasets import synthetic

    path = tmp_path_factory.mktemp("synthetic")
    synthetic.generate(str(path), num_train=16, num_val=4, labeled_fraction=4, height=40,
                       width=40, seed=1, verbose=False)
    return path


def _train_args(data_dir, logdir, *extra, steps=6):
    return [sys.executable, "train.py", f"--train_logdir={logdir}",
            "--dataset=synthetic_shapes", f"--dataset_dir={data_dir}", "--train_split=train",
            "--model_variant=mobilenet_v2", "--decoder_output_stride=4",
            "--train_crop_size=33,33", "--train_batch_size=2",
            f"--training_number_of_steps={steps}", "--base_learning_rate=0.01",
            "--log_steps=1", "--save_summaries_secs=1", *extra]


def _run(args, timeout=300):
    return subprocess.run(args, cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=timeout)


def _events(logdir):
    for path in glob.glob(os.path.join(logdir, "train", "events.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            yield event


def _scalars(logdir, tag):
    values = {}
    for event in _events(logdir):
        for value in event.summary.value:
            if value.tag == tag:
                values[event.step] = float(tf.make_ndarray(value.tensor))
    return values


def _tags(logdir):
    return {value.tag for event in _events(logdir) for value in event.summary.value}


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    """A run killed with SIGKILL after its first checkpoint, then restarted; it keeps
    the network's weights every 4 steps."""
    logdir = tmp_path_factory.mktemp("run")
    args = _train_args(data_dir, logdir, "--save_interval_secs=0", "--eval_split=val",
                       "--eval_crop_size=none", "--keep_checkpoint_steps=4", steps=12)
    process = subprocess.Popen(args, cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 240
    # The state file "checkpoint" names the latest checkpoint once its files are
    # complete: killed before it, the run would rightly start again from step 0.
    while not (logdir / "checkpoint").exists() and time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"training ended before its first checkpoint:\n{process.stdout.read()}")
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = int(tf.train.latest_checkpoint(str(logdir)).rsplit("-", 1)[-1])
    result = _run(args)
    assert result.returncode == 0, result.stdout + result.stderr
    return logdir, killed_at, result.stdout


def test_killed_run_resumes_and_finishes_with_the_schedule_continuing(trained):
    logdir, killed_at, stdout = trained
    assert killed_at < 12
    assert f"resumed from {logdir}/ckpt-{killed_at}; step {killed_at} of 12" in stdout
    assert tf.train.latest_checkpoint(str(logdir)).endswith("ckpt-12")
    reader = tf.train.load_checkpoint(str(logdir))
    iterations = [k for k in reader.get_variable_to_shape_map() if "iterations" in k]
    assert iterations and int(reader.get_tensor(iterations[0])) == 12
    # The logged learning rate follows the poly schedule across the restart:
    # the rate used at step s (1-based) is lr(s - 1).
    rates = _scalars(str(logdir), "train/learning_rate")
    assert set(range(killed_at + 1, 13)) <= set(rates)
    for step, rate in rates.items():
        np.testing.assert_allclose(rate, 0.01 * (1 - (step - 1) / 12) ** 0.9, rtol=1e-5)
    config = json.loads((logdir / "run_config.json").read_text())
    assert config["model"]["model_variant"] == "mobilenet_v2"
    assert "--training_number_of_steps=12" in (logdir / "flags.txt").read_text()


def test_killed_and_resumed_run_ends_as_the_uninterrupted_one(trained, data_dir, tmp_path):
    """The input pipelines restart at the checkpoint's step and the dropout
    seeds come back with the checkpoint, so the resumed run logs the losses and
    ends with the weights of a run that was never interrupted (which also never
    saved a checkpoint before the end, kept none, nor wrote image summaries)."""
    logdir, killed_at, stdout = trained
    uninterrupted = tmp_path / "uninterrupted"
    args = _train_args(data_dir, uninterrupted, "--save_interval_secs=100000", steps=12)
    args = [a.replace("--save_summaries_secs=1", "--save_summaries_secs=100000") for a in args]
    result = _run(args + ["--export=false"])
    assert result.returncode == 0, result.stdout + result.stderr
    digest = lambda out: out.split("final weights digest: ")[1].split()[0]  # noqa: E731
    assert digest(result.stdout) == digest(stdout)
    resumed, reference = _scalars(str(logdir), "train/loss"), _scalars(str(uninterrupted),
                                                                       "train/loss")
    assert set(range(killed_at + 1, 13)) <= set(resumed)
    for step in range(killed_at + 1, 13):
        assert resumed[step] == reference[step], step


def test_eval_json_and_table(trained, data_dir):
    logdir, _, stdout = trained
    assert "mIoU" in stdout
    tags = _tags(str(logdir))
    assert {"images/image", "images/label", "images/prediction",
            "max_probability/prediction"} <= tags
    result = json.loads((logdir / "eval_val.json").read_text())
    assert 0.0 <= result["miou"] <= 1.0
    assert len(result["per_class_iou"]) == 5
    assert np.asarray(result["confusion_matrix"]).sum() == 4 * 40 * 40
    eval_result = _run([sys.executable, "eval.py", f"--checkpoint_dir={logdir}",
                        "--eval_split=val", "--eval_crop_size=41,41",
                        f"--output_json={logdir}/eval_cli.json"])
    assert eval_result.returncode == 0, eval_result.stderr
    cli = json.loads((logdir / "eval_cli.json").read_text())
    assert cli["evaluated"].endswith("ckpt-12")
    assert cli["eval_crop_size"] == [41, 41]
    # Padding to a crop adds only ignored pixels: the same pixels are scored.
    assert np.asarray(cli["confusion_matrix"]).sum() == 4 * 40 * 40
    saved = _run([sys.executable, "eval.py", f"--saved_model={logdir}/export",
                  "--dataset=synthetic_shapes", f"--dataset_dir={data_dir}", "--eval_split=val",
                  "--eval_crop_size=none", f"--output_json={logdir}/eval_saved.json"])
    assert saved.returncode == 0, saved.stderr[-3000:]
    # The export was written from the final weights: same predictions as the
    # training run's own evaluation of whole images.
    np.testing.assert_array_equal(
        json.loads((logdir / "eval_saved.json").read_text())["confusion_matrix"],
        result["confusion_matrix"])


def test_saved_model_round_trip_in_a_fresh_process_equals_in_process(trained, tmp_path):
    logdir, _, _ = trained
    export_dir = logdir / "export"
    assert (export_dir / "saved_model.pb").exists()
    images = np.random.default_rng(0).integers(0, 256, (2, 37, 45, 3)).astype(np.uint8)
    np.save(tmp_path / "images.npy", images)
    script = (
        "import numpy as np, tensorflow as tf, sys\n"
        "assert not any(m.split('.')[0] in ('core', 'wss', 'datasets') for m in sys.modules)\n"
        f"model = tf.saved_model.load({str(export_dir)!r})\n"
        f"out = model.signatures['serving_default'](images=tf.constant(np.load({str(tmp_path / 'images.npy')!r})))\n"
        f"np.save({str(tmp_path / 'semantic.npy')!r}, out['semantic'].numpy())\n"
        f"np.save({str(tmp_path / 'probabilities.npy')!r}, out['probabilities'].numpy())\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=ENV,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr

    from core import run_config, training
    from core.evaluation import network_predict_fn

    network = run_config.build_network(run_config.read_run_config(str(logdir)))
    training.network_checkpoint(network).restore(
        tf.train.latest_checkpoint(str(logdir))).expect_partial()
    expected = network_predict_fn(network)(tf.constant(images, tf.float32)).numpy()
    probabilities = np.load(tmp_path / "probabilities.npy")
    assert probabilities.shape == (2, 37, 45, 5)
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    np.testing.assert_array_equal(np.load(tmp_path / "semantic.npy"), expected.argmax(-1))


def test_predict_writes_coloured_masks_and_overlays(trained, data_dir, tmp_path):
    logdir, _, _ = trained
    from PIL import Image

    image = np.random.default_rng(1).integers(0, 256, (30, 41, 3)).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "photo.png")
    result = _run([sys.executable, "predict.py", f"--saved_model={logdir}/export",
                   f"--images={tmp_path}/*.png", f"--output_dir={tmp_path}/out"])
    assert result.returncode == 0, result.stderr
    mask = np.asarray(Image.open(tmp_path / "out/photo_mask.png"))
    overlay = np.asarray(Image.open(tmp_path / "out/photo_overlay.png"))
    assert mask.shape == overlay.shape == (30, 41, 3)
    labels = json.loads((logdir / "export/labels.json").read_text())
    palette = {tuple(c) for c in labels["colormap"][:5]}
    assert {tuple(p) for p in mask.reshape(-1, 3)} <= palette
    np.testing.assert_allclose(overlay, 0.5 * mask + 0.5 * image, atol=1.0)


def test_non_finite_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(
        data_dir, tmp_path):
    result = _run(_train_args(data_dir, tmp_path, "--save_interval_secs=0", "--export=false",
                              "--base_learning_rate=1e30", "--momentum=0", steps=40))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "loss is nan at step" in result.stderr or "loss is inf at step" in result.stderr
    step = int(result.stderr.split(" at step ")[1].split(";")[0])
    latest = tf.train.latest_checkpoint(str(tmp_path))
    assert latest is not None and int(latest.rsplit("-", 1)[-1]) < step
    from core import run_config, training

    network = run_config.build_network(run_config.read_run_config(str(tmp_path)))
    training.network_checkpoint(network).restore(latest).expect_partial()
    assert all(np.all(np.isfinite(w.numpy())) for w in network.weights)


@pytest.mark.parametrize("extra, message", [
    (["--model_variant=resnet_v1_18"], "--model_variant='resnet_v1_18' is unknown"),
    (["--train_crop_size=40,40"], "does not suit --output_stride=16"),
    (["--strategy=mirrored", "--num_cpu_replicas=2", "--train_batch_size=3"],
     "--train_batch_size=3 is not divisible by the 2 replicas"),
    (["--train_split=nope"], "no records for split 'nope'"),
    (["--tf_initial_checkpoint=/nonexistent/model.ckpt", "--export=false"],
     "checkpoint /nonexistent/model.ckpt not found"),
    (["--tf_initial_checkpoint=keras:imagenet", "--model_variant=xception_65"],
     "keras:imagenet is for --model_variant=mobilenet_v2 only"),
])
def test_wrong_flags_fail_with_a_clear_message(data_dir, tmp_path, extra, message):
    result = _run(_train_args(data_dir, tmp_path, *extra))
    assert result.returncode != 0
    assert message in result.stderr, result.stderr[-2000:]


def test_pseudoseg_run_logs_every_term_and_panel_then_exports_and_evaluates(data_dir, tmp_path):
    result = _run(_train_args(data_dir, tmp_path, "--mode=pseudoseg", "--train_split=labeled",
                              "--train_split_cls=unlabeled", "--cutout_size=8",
                              "--eval_split=val", "--eval_crop_size=none", steps=3))
    assert result.returncode == 0, result.stderr[-3000:]
    tags = _tags(str(tmp_path))
    for name in ("loss", "loss_seg", "loss_cls", "loss_sgc", "loss_consistency",
                 "learning_rate", "pixel_accuracy", "acc_weak", "acc_pseudo", "acc_strong",
                 "kept_ratio"):
        assert f"train/{name}" in tags, name
    for name in ("images/weak_view", "images/strong_view", "images/pseudo_label",
                 "images/cam_max", "images/sgc_prediction", "images/weak_decoder_prediction",
                 "max_probability/decoder", "max_probability/sgc",
                 "max_probability/pseudo_label"):
        assert name in tags, name
    assert (tmp_path / "export" / "saved_model.pb").exists()
    assert 0.0 <= json.loads((tmp_path / "eval_val.json").read_text())["miou"] <= 1.0


def test_initial_weights_from_a_keras_file_and_from_a_deeplab_tf1_checkpoint(data_dir, tmp_path):
    from core.checkpoints import save_deeplab_checkpoint
    from core.deeplab import build_model

    network = build_model("mobilenet_v2", 5, atrous_rates=None, decoder_output_stride=4)
    network.save_weights(str(tmp_path / "start.weights.h5"))
    prefix = save_deeplab_checkpoint(network, str(tmp_path / "deeplab" / "model.ckpt"))
    keras_run = _run(_train_args(data_dir, tmp_path / "a", "--export=false",
                                 f"--tf_initial_checkpoint={tmp_path}/start.weights.h5",
                                 steps=1))
    assert keras_run.returncode == 0, keras_run.stderr[-3000:]
    assert "initialised the network from Keras weights" in keras_run.stdout
    deeplab_run = _run(_train_args(data_dir, tmp_path / "b", "--export=false",
                                   f"--tf_initial_checkpoint={prefix}", steps=1))
    assert deeplab_run.returncode == 0, deeplab_run.stderr[-3000:]
    # Everything but the last layers (logits and the classification head) loads.
    total = len(network.weights)
    assert f"{total - 4} variables loaded, 4 kept fresh" in deeplab_run.stdout
    assert "0 missing from the checkpoint, 4 last-layer variables excluded" in deeplab_run.stdout
    assert "0 checkpoint variables unused" in deeplab_run.stdout
    # run_config.json states what was loaded, and keeps it when the run resumes.
    record = json.loads((tmp_path / "b" / "run_config.json").read_text())["initialization"]
    assert record["source"] == "deeplab_checkpoint" and record["checkpoint"] == prefix
    assert (record["loaded"], record["missing"], record["excluded"], record["unused"]) == (
        total - 4, 0, 4, 0)
    assert record["num_model_variables"] == total and not record["initialize_last_layer"]
    resumed = _run(_train_args(data_dir, tmp_path / "b", "--export=false",
                               f"--tf_initial_checkpoint={prefix}", steps=2))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout
    assert json.loads((tmp_path / "b" / "run_config.json").read_text())[
        "initialization"] == record
    keras_record = json.loads((tmp_path / "a" / "run_config.json").read_text())["initialization"]
    assert keras_record["source"] == "keras_weights" and keras_record["loaded"] == total


def test_kept_checkpoints_survive_the_rolling_ones_and_evaluate_one_by_one(trained):
    """--keep_checkpoint_steps=4 kept steps 4, 8 and 12 across the kill and resume
    while max_checkpoints_to_keep=3 rolled the others away; eval.py evaluates given
    checkpoints in one process, with each image's confusion matrix, and the kept
    step-12 weights score exactly as the final checkpoint."""
    logdir, _, _ = trained
    from core.evaluation import read_per_image_confusion
    from core.training import kept_checkpoints

    kept = kept_checkpoints(str(logdir))
    assert list(kept) == [4, 8, 12]
    assert sorted(int(p.rsplit("-", 1)[-1].split(".")[0])
                  for p in glob.glob(str(logdir / "ckpt-*.index"))) == [10, 11, 12]
    result = _run([sys.executable, "eval.py", f"--checkpoint_path={kept[4]},{kept[12]}",
                   "--eval_crop_size=none", f"--output_json={logdir}/kept_{{step}}.json",
                   f"--per_image_confusion={logdir}/kept_{{step}}.npz"])
    assert result.returncode == 0, result.stderr[-3000:]
    final = json.loads((logdir / "eval_val.json").read_text())
    at_12 = json.loads((logdir / "kept_12.json").read_text())
    assert at_12["step"] == 12 and at_12["evaluated"] == kept[12]
    np.testing.assert_array_equal(at_12["confusion_matrix"], final["confusion_matrix"])
    at_4 = json.loads((logdir / "kept_4.json").read_text())
    assert at_4["step"] == 4 and at_4["evaluated"] == kept[4]
    # Kept weights: those of the training checkpoint of their step, different per step.
    from core import run_config, training

    network = run_config.build_network(run_config.read_run_config(str(logdir)))

    def network_weights(path):
        training.network_checkpoint(network).restore(
            path).expect_partial().assert_existing_objects_matched()  # every weight restored
        return [w.numpy() for w in network.weights]

    final_weights = network_weights(str(logdir / "ckpt-12"))
    for kept_value, final_value in zip(network_weights(kept[12]), final_weights):
        np.testing.assert_array_equal(kept_value, final_value)
    at_4_weights, at_8_weights = network_weights(kept[4]), network_weights(kept[8])
    assert any(not np.array_equal(a, b) for a, b in zip(at_4_weights, at_8_weights))
    assert any(not np.array_equal(a, b) for a, b in zip(at_8_weights, final_weights))
    per_image = read_per_image_confusion(str(logdir / "kept_4.npz"))
    assert per_image["evaluated"] == kept[4]
    assert len(set(per_image["image_ids"])) == 4 and all(per_image["image_ids"])
    assert per_image["confusion"].shape == (4, 5, 5)
    np.testing.assert_array_equal(per_image["confusion"].sum(0), at_4["confusion_matrix"])
    np.testing.assert_array_equal(per_image["confusion"].sum((1, 2)), [40 * 40] * 4)
    several = _run([sys.executable, "eval.py", f"--checkpoint_path={kept[4]},{kept[8]}",
                    f"--output_json={logdir}/kept.json"])
    assert several.returncode != 0
    assert "--output_json" in several.stderr and "must contain {step}" in several.stderr


def test_checkpoints_every_n_steps():
    """--save_interval_steps saves at its multiples (and --save_interval_secs still
    by time)."""
    from core.training import CheckpointSaver

    class Manager:
        def __init__(self):
            self.saved = []

        def save(self, checkpoint_number):
            self.saved.append(checkpoint_number)
            return f"ckpt-{checkpoint_number}"

    step = [0]
    manager = Manager()
    saver = CheckpointSaver(manager, lambda: step[0], interval_secs=10 ** 6, interval_steps=3)
    for step[0] in range(1, 11):
        saver.on_train_batch_end(step[0])
    assert manager.saved == [3, 6, 9]
    manager = Manager()
    saver = CheckpointSaver(manager, lambda: step[0], interval_secs=0)
    for step[0] in range(1, 4):
        saver.on_train_batch_end(step[0])
    assert manager.saved == [1, 2, 3]


def test_progress_bar_of_a_resumed_run_times_the_steps_since_resuming(monkeypatch, capsys):
    """Resumed at step 2000 of 4000, 10 steps in 10 s leave 1990 steps: the ETA is
    1990 s (33:10), not Keras's 10 s / 2010 steps per step (9 s)."""
    from core.training import ResumedProgbar

    now = [1000.0]
    monkeypatch.setattr(time, "time", lambda: now[0])
    bar = ResumedProgbar(4000, start_step=2000, unit_name="step")
    bar.update(2000)
    now[0] += 10.0
    bar.update(2010, values=[("loss", 1.0)])
    shown = capsys.readouterr().out
    assert "2010/4000" in shown and "33:10" in shown and "1s/step" in shown


def test_eval_watch_evaluates_new_checkpoints_until_the_final_step(trained):
    logdir, _, _ = trained
    result = _run([sys.executable, "eval.py", f"--checkpoint_dir={logdir}", "--watch",
                   "--watch_until_step=12", "--eval_crop_size=none",
                   f"--output_json={logdir}/watch.json"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((logdir / "watch.json").read_text())["evaluated"].endswith("ckpt-12")


def test_eval_on_two_replicas_equals_one(trained):
    logdir, _, _ = trained
    results = []
    for extra in ([], ["--strategy=mirrored", "--num_cpu_replicas=2"]):
        out = logdir / f"eval_{len(results)}.json"
        result = _run([sys.executable, "eval.py", f"--checkpoint_dir={logdir}",
                       "--eval_split=val", "--eval_crop_size=41,41", "--eval_batch_size=2",
                       f"--output_json={out}", *extra])
        assert result.returncode == 0, result.stderr[-3000:]
        results.append(json.loads(out.read_text()))
    np.testing.assert_array_equal(results[0]["confusion_matrix"], results[1]["confusion_matrix"])
