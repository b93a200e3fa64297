"""export.py and its formats as a deployment would use them: the SavedModel in
TensorFlow's own loaders (``saved_model_cli run``, ``tf.saved_model.load``
in a process that never imports this project), the ``.tflite`` model in
``ai-edge-litert``, each compared with the network computed here and with
numpy; bad input gets a one-line error and leaves an earlier export intact."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tests import numpy_reference

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
NUM_CLASSES = 5


def _run(args, cwd=REPO, timeout=300):
    return subprocess.run(args, cwd=cwd, env=ENV, capture_output=True, text=True,
                          timeout=timeout)


def _decisive_weights(network, seed=0):
    """Weights for which the output depends on the image and most pixels have
    a clear argmax: He-normal kernels (the default initialisation shrinks the
    activations towards zero with depth), batch-norm statistics moved off
    their initial values (so a lost one changes the output), larger logits."""
    rng = np.random.default_rng(seed)
    for variable in network.weights:
        name, shape = variable.path, tuple(variable.shape)
        if name.endswith("kernel"):
            fan_in = np.prod(shape[:-1]) if "depthwise" not in name else np.prod(shape[:2])
            scale = 3.0 if "logits.semantic" in name else 1.0
            value = rng.normal(0.0, scale * np.sqrt(2.0 / fan_in), shape)
        elif "moving_variance" in name or "gamma" in name:
            value = rng.uniform(0.8, 1.2, shape)
        elif "moving_mean" in name or "beta" in name:
            value = rng.normal(0.0, 0.05, shape)
        else:
            continue
        variable.assign(value.astype(np.float32))


def _reference(network, images):
    """Probabilities by the network's logits, then numpy's aligned-corner
    bilinear resize and softmax (float64)."""
    logits = network(tf.constant(images, tf.float32), training=False)["logits"].numpy()
    resized = numpy_reference.resize_bilinear_align_corners(logits, images.shape[1:3])
    return numpy_reference.softmax(resized)


def _clear(probabilities, margin=1e-3):
    """Pixels whose two most likely classes differ by more than ``margin``."""
    top2 = np.sort(probabilities, axis=-1)[..., -2:]
    return top2[..., 1] - top2[..., 0] > margin


def _assert_one_line_error(result, message):
    """Exit status 1 and ``message`` as the last line of stderr, no traceback
    (lines before it are TensorFlow's own start-up logging, if it was loaded)."""
    assert result.returncode == 1, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == message, result.stderr[-3000:]
    assert "Traceback" not in result.stderr


def _snapshot(directory):
    return sorted((str(p.relative_to(directory)), p.stat().st_size, p.stat().st_mtime_ns)
                  for p in Path(directory).rglob("*"))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A train_logdir as train.py leaves it (run_config.json, a checkpoint, a
    folder dataset's descriptor), written here, and the network it holds."""
    from core import run_config, training
    from core.deeplab import build_model
    from datasets import dataset_info

    root = tmp_path_factory.mktemp("export")
    data = root / "data"
    info = dataset_info.folder_dataset_info("tiny", NUM_CLASSES, 255,
                                            ["sky", "road", "car", "tree", "sign"])
    data.mkdir()
    dataset_info.write_dataset_info_json(info, str(data))
    model = dict(model_variant="mobilenet_v2", num_classes=NUM_CLASSES, output_stride=16,
                 atrous_rates=None, decoder_output_stride=4, multi_grid=None)
    network = build_model(**model)
    _decisive_weights(network)
    logdir = root / "run"
    run_config.write_run_config(str(logdir), dict(
        model=model, mode="supervised",
        dataset=dict(name="tiny", dataset_dir=str(data), num_classes=NUM_CLASSES,
                     ignore_label=255)))
    training.network_checkpoint(network).save(str(logdir / "ckpt"))
    return logdir, network


def _run_together(*commands, cwd=REPO, timeout=300):
    """Runs independent commands side by side (two cores); their results in order."""
    processes = [subprocess.Popen(args, cwd=cwd, env=ENV, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for args in commands]
    results = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=timeout)
        results.append(subprocess.CompletedProcess(process.args, process.returncode,
                                                   stdout, stderr))
    return results


@pytest.fixture(scope="module")
def exports(run_dir):
    """export.py's SavedModel and float32 TFLite exports of the run."""
    logdir, _ = run_dir
    dirs = {"saved_model": logdir.parent / "saved_model", "tflite": logdir.parent / "tflite"}
    results = _run_together(*[
        [sys.executable, "export.py", f"--checkpoint_dir={logdir}", f"--export_dir={path}",
         f"--format={name}"] for name, path in dirs.items()])
    for result in results:
        assert result.returncode == 0, result.stderr[-3000:]
    return dirs


@pytest.fixture(scope="module")
def saved_model_dir(exports):
    return exports["saved_model"]


@pytest.fixture(scope="module")
def tflite_dir(exports):
    return exports["tflite"]


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).integers(0, 256, (2, 37, 45, 3)).astype(np.uint8)


def test_saved_model_runs_in_saved_model_cli_and_a_fresh_process_alike(
        run_dir, saved_model_dir, images, tmp_path):
    np.save(tmp_path / "images.npy", images)
    script = (
        "import numpy as np, sys, tensorflow as tf\n"
        "model = tf.saved_model.load(sys.argv[1])\n"
        "images = np.load(sys.argv[2])\n"
        "served = model.signatures['serving_default'](images=tf.constant(images))\n"
        "floats = model.signatures['predict_float'](images=tf.constant(images, tf.float32))\n"
        "for key in ('semantic', 'probabilities'):\n"
        "    np.save(f'served_{key}.npy', served[key].numpy())\n"
        "    np.save(f'float_{key}.npy', floats[key].numpy())\n"
        "assert not any(m.split('.')[0] in ('core', 'wss', 'datasets', 'tests')"
        " for m in sys.modules)\n")
    cli, fresh = _run_together(
        ["saved_model_cli", "run", "--dir", str(saved_model_dir), "--tag_set", "serve",
         "--signature_def", "serving_default", "--inputs", f"images={tmp_path / 'images.npy'}",
         "--outdir", str(tmp_path / "cli")],
        [sys.executable, "-c", script, str(saved_model_dir), str(tmp_path / "images.npy")],
        cwd=tmp_path)
    assert cli.returncode == 0, cli.stderr[-3000:]
    assert "Result for output key semantic:" in cli.stdout
    assert "Result for output key probabilities:" in cli.stdout
    assert fresh.returncode == 0, fresh.stderr[-3000:]

    for prefix in ("served", "float"):
        for key in ("semantic", "probabilities"):
            np.testing.assert_array_equal(np.load(tmp_path / f"{prefix}_{key}.npy"),
                                          np.load(tmp_path / "cli" / f"{key}.npy"))
    _, network = run_dir
    expected = _reference(network, images)
    probabilities = np.load(tmp_path / "cli" / "probabilities.npy")
    semantic = np.load(tmp_path / "cli" / "semantic.npy")
    assert probabilities.dtype == np.float32 and semantic.dtype == np.int32
    assert probabilities.shape == (2, 37, 45, NUM_CLASSES)
    # float32 resize and softmax in the SavedModel against numpy's float64 of the
    # eager logits: rounding reaches about 1.2e-5 in probability (seen with the
    # fused batch norm's trained network), far below any class decision.
    np.testing.assert_allclose(probabilities, expected, atol=3e-5)
    clear = _clear(expected)
    assert clear.mean() > 0.9 and len(np.unique(semantic)) > 1
    np.testing.assert_array_equal(semantic[clear], expected.argmax(-1)[clear])
    labels = json.loads((saved_model_dir / "labels.json").read_text())
    assert labels["class_names"] == ["sky", "road", "car", "tree", "sign"]
    # Each weight is stored once (float32), not once per way it is tracked.
    stored = sum(p.stat().st_size for p in (saved_model_dir / "variables").glob("*.data-*"))
    assert stored < 1.05 * 4 * sum(int(np.prod(w.shape)) for w in network.weights)


def test_tflite_runs_in_litert_and_agrees_with_the_saved_model(
        run_dir, saved_model_dir, tflite_dir, images):
    from core.tflite_runtime import TFLiteSegmenter

    assert sorted(os.listdir(tflite_dir)) == ["labels.json", "model.tflite"]
    segmenter = TFLiteSegmenter(str(tflite_dir / "model.tflite"))
    assert segmenter.fixed_size is None
    serve = tf.saved_model.load(str(saved_model_dir)).signatures["serving_default"]
    _, network = run_dir
    # Any size and batch: the runner resizes the input per call.
    for batch in (images, images[:1, :29, :40]):
        lite = segmenter(batch)
        saved = {k: v.numpy() for k, v in serve(images=tf.constant(batch)).items()}
        assert lite["semantic"].dtype == np.int32
        assert lite["probabilities"].shape == saved["probabilities"].shape
        np.testing.assert_allclose(lite["probabilities"], saved["probabilities"], atol=1e-4)
        assert (lite["semantic"] == saved["semantic"]).mean() >= 0.999
        expected = _reference(network, batch)
        clear = _clear(expected)
        np.testing.assert_array_equal(lite["semantic"][clear], expected.argmax(-1)[clear])


def test_predict_segments_with_a_tflite_export(tflite_dir, tmp_path):
    from PIL import Image

    from core.tflite_runtime import TFLiteSegmenter

    image = np.random.default_rng(2).integers(0, 256, (30, 41, 3)).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "photo.png")
    result = _run([sys.executable, "predict.py", f"--model={tflite_dir}/model.tflite",
                   f"--images={tmp_path}/*.png", f"--output_dir={tmp_path}/out"])
    assert result.returncode == 0, result.stderr[-3000:]
    mask = np.asarray(Image.open(tmp_path / "out/photo_mask.png"))
    colormap = np.asarray(json.loads((tflite_dir / "labels.json").read_text())["colormap"])
    semantic = TFLiteSegmenter(str(tflite_dir / "model.tflite"))(image[None])["semantic"][0]
    np.testing.assert_array_equal(mask, colormap[semantic])


def test_tflite_quantisation_and_a_fixed_input_size(tmp_path):
    """On a tiny network (fast to convert): float16 stores float16 weights and
    dynamic-range quantisation int8 ones, both staying close to float32; a
    fixed size takes only that size."""
    from core.tflite import write_tflite
    from core.tflite_runtime import TFLiteSegmenter
    from tests.tiny_network import TinyNet

    network = TinyNet(NUM_CLASSES)
    network(tf.zeros((1, 24, 32, 3)))
    _decisive_weights(network)
    network.seg.kernel.assign(network.seg.kernel * 4.0)
    image = np.random.default_rng(3).integers(0, 256, (1, 24, 32, 3)).astype(np.uint8)
    expected = _reference(network, image)
    clear = _clear(expected, margin=0.05)
    for quantize, weight_type, tolerance in (("none", None, 1e-5),
                                             ("float16", np.float16, 1e-2),
                                             ("dynamic_range", np.int8, 0.1)):
        segmenter = TFLiteSegmenter(write_tflite(network, str(tmp_path / quantize),
                                                 quantize=quantize))
        types = {d["dtype"] for d in segmenter.interpreter.get_tensor_details()}
        if weight_type is None:
            assert not types & {np.float16, np.int8}
        else:
            assert weight_type in types
        lite = segmenter(image)
        np.testing.assert_allclose(lite["probabilities"], expected, atol=tolerance)
        np.testing.assert_array_equal(lite["semantic"][clear], expected.argmax(-1)[clear])

    fixed = TFLiteSegmenter(write_tflite(network, str(tmp_path / "fixed"), input_size=(24, 32)))
    assert fixed.input_shape == (1, 24, 32, 3) and fixed.fixed_size == (24, 32)
    np.testing.assert_allclose(fixed(image)["probabilities"], expected, atol=1e-5)
    with pytest.raises(ValueError, match=r"takes images of shape \[1, 24, 32, 3\]"):
        fixed(np.zeros((1, 32, 24, 3), np.uint8))


def test_a_failed_export_leaves_the_earlier_one_intact(tmp_path):
    from core.export_files import staged_directory

    target = tmp_path / "export"
    with staged_directory(str(target)) as staging:
        Path(staging, "model").write_text("first")
    before = _snapshot(target)
    with pytest.raises(RuntimeError, match="conversion failed"):
        with staged_directory(str(target)) as staging:
            Path(staging, "model").write_text("half-written")
            raise RuntimeError("conversion failed")
    assert _snapshot(target) == before
    with staged_directory(str(target)) as staging:
        Path(staging, "model").write_text("second")
    assert (target / "model").read_text() == "second"
    assert sorted(os.listdir(tmp_path)) == ["export"]  # no staging or set-aside directories


@pytest.mark.parametrize("flags, message", [
    (["--format=onnx"], "ERROR: --format='onnx' is unknown; expected one of saved_model, tflite"),
    (["--format=tflite", "--quantize=int4"],
     "ERROR: --quantize='int4' is unknown; expected one of none, float16, dynamic_range"),
    (["--format=tflite", "--input_size=64"],
     "ERROR: --input_size=64 must be height,width (positive integers)"),
    (["--checkpoint_path={logdir}/ckpt-99"], "ERROR: checkpoint {logdir}/ckpt-99 not found"),
    (["--checkpoint_dir={logdir}/missing"],
     "ERROR: {logdir}/missing/run_config.json not found: --checkpoint_dir must be a "
     "train_logdir written by train.py"),
])
def test_bad_input_fails_in_one_line_and_keeps_the_earlier_export(
        run_dir, saved_model_dir, flags, message):
    logdir, _ = run_dir
    before = _snapshot(saved_model_dir)
    result = _run([sys.executable, "export.py", f"--checkpoint_dir={logdir}",
                   f"--export_dir={saved_model_dir}", *[f.format(logdir=logdir) for f in flags]])
    _assert_one_line_error(result, message.format(logdir=logdir))
    assert _snapshot(saved_model_dir) == before
    assert not [p for p in os.listdir(saved_model_dir.parent) if ".tmp-" in p or ".old-" in p]


def test_an_unwritable_export_dir_fails_in_one_line(run_dir, tmp_path):
    logdir, _ = run_dir
    (tmp_path / "a_file").write_text("not a directory")
    export_dir = tmp_path / "a_file" / "export"
    result = _run([sys.executable, "export.py", f"--checkpoint_dir={logdir}",
                   f"--export_dir={export_dir}"])
    _assert_one_line_error(result, f"ERROR: cannot write the export to {export_dir}: "
                                   f"{tmp_path / 'a_file'} exists and is not a directory")
