"""wss/pseudo_label_report.py: ECE and mIoU against a hand-computed case, and the
CLI on a checkpoint of a 2-step PseudoSeg run on generated data."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from wss import pseudo_label_report as report

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}


def test_ece_and_miou_of_a_hand_computed_case():
    # 7 pixels, 3 classes, ignore label 255 (the fifth pixel).
    probabilities = np.array([
        [0.90, 0.05, 0.05],  # label 0, correct, confidence 0.9  -> bin 13
        [0.80, 0.10, 0.10],  # label 1, wrong,   0.8             -> bin 12
        [0.20, 0.70, 0.10],  # label 1, correct, 0.7             -> bin 10
        [0.10, 0.30, 0.60],  # label 2, correct, 0.6             -> bin 9
        [0.50, 0.25, 0.25],  # ignored
        [0.34, 0.33, 0.33],  # label 2, wrong,   0.34            -> bin 5
        [0.05, 0.05, 0.90],  # label 2, correct, 0.9             -> bin 13
    ])
    labels = np.array([0, 1, 1, 2, 255, 2, 2])
    stats = report.CalibrationStats(3, 255)
    # Two updates (image by image) accumulate like one.
    stats.update(probabilities[:3].reshape(1, 3, 1, 3), labels[:3].reshape(1, 3, 1))
    stats.update(probabilities[3:], labels[3:])
    # Bins: 13 holds two pixels (accuracy 1, confidence 0.9), 12: (0, 0.8),
    # 10: (1, 0.7), 9: (1, 0.6), 5: (0, 0.34); N = 6.
    expected_ece = (2 * abs(1 - 0.9) + abs(0 - 0.8) + abs(1 - 0.7) + abs(1 - 0.6)
                    + abs(0 - 0.34)) / 6
    assert stats.ece() == pytest.approx(expected_ece)  # 0.34
    assert stats.ece() == pytest.approx(0.34)
    bins = stats.bins()
    assert [b["count"] for b in bins] == [0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 1, 0, 1, 2, 0]
    assert bins[13]["accuracy"] == 1.0 and bins[13]["confidence"] == pytest.approx(0.9)
    assert bins[12]["accuracy"] == 0.0
    # Predictions 0, 0, 1, 2, 0, 2 against labels 0, 1, 1, 2, 2, 2:
    # IoU_0 = 1 / (1 + 2 + 0), IoU_1 = 1 / (1 + 0 + 1), IoU_2 = 2 / (2 + 0 + 1).
    miou, iou = stats.iou()
    np.testing.assert_allclose(iou, [1 / 3, 1 / 2, 2 / 3])
    assert miou == pytest.approx(0.5)


def test_bins_are_equal_width_and_one_falls_in_the_last():
    np.testing.assert_array_equal(
        report.bin_indices([0.0, 1 / 15 - 1e-9, 1 / 15 + 1e-9, 0.5, 14 / 15 + 1e-9, 1.0]),
        [0, 0, 1, 7, 14, 14])
    stats = report.CalibrationStats(2, 255)
    stats.update(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0, 1]))
    assert stats.ece() == 0.0  # confident and right


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    from datasets import synthetic

    data_dir = tmp_path_factory.mktemp("synthetic")
    synthetic.generate(str(data_dir), num_train=8, num_val=3, labeled_fraction=4, height=40,
                       width=40, seed=2, verbose=False)
    logdir = tmp_path_factory.mktemp("run")
    args = [sys.executable, "train.py", f"--train_logdir={logdir}", "--mode=pseudoseg",
            "--dataset=synthetic_shapes", f"--dataset_dir={data_dir}",
            "--train_split=labeled", "--train_split_cls=unlabeled",
            "--model_variant=mobilenet_v2", "--decoder_output_stride=4",
            "--train_crop_size=33,33", "--train_batch_size=2", "--cutout_size=8",
            "--training_number_of_steps=2", "--base_learning_rate=0.01", "--export=false",
            "--temperature=0.7", "--fusion_gamma=0.6",
            "--save_summaries_secs=100000"]
    result = subprocess.run(args, cwd=REPO, env=ENV, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return data_dir, logdir


def test_cli_reports_every_source_with_a_reliability_diagram(trained_run, tmp_path):
    data_dir, logdir = trained_run
    result = subprocess.run(
        [sys.executable, "-m", "wss.pseudo_label_report", f"--checkpoint_dir={logdir}",
         f"--dataset_dir={data_dir}", "--split=val", f"--output_dir={tmp_path}"],
        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ECE" in result.stdout and "fused" in result.stdout
    out = json.loads((tmp_path / "val.json").read_text())
    assert out["checkpoint"].endswith("ckpt-2")
    assert out["num_images"] == 3 and out["cam_labels"] == "predicted"
    # The method settings are the run's (non-default here), not the defaults.
    assert out["settings"]["temperature"] == 0.7 and out["settings"]["fusion_gamma"] == 0.6
    assert set(out["sources"]) == {"decoder", "sgc", "fused"}
    for source in out["sources"].values():
        assert 0.0 <= source["miou"] <= 1.0 and 0.0 <= source["ece"] <= 1.0
        assert len(source["bins"]) == 15 and len(source["per_class_iou"]) == 5
        # Scored at the logit resolution: 40x40 images give 10x10 logits.
        assert source["num_pixels"] == 3 * 10 * 10
        # Sharpening keeps the argmax and raises the confidence.
        assert source["mean_confidence_sharpened"] >= source["mean_confidence"] - 1e-6
    for name in ("reliability_val.png", "examples_val.png"):
        png = tmp_path / name
        assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert out["examples_figure"] == str(tmp_path / "examples_val.png")


def test_example_colours_are_pascal_s_and_the_ignore_label_is_white(tmp_path):
    colors = report.class_colors(21, 255)
    expected = {0: (0, 0, 0), 1: (128, 0, 0), 2: (0, 128, 0), 3: (128, 128, 0),
                15: (192, 128, 128), 20: (0, 64, 128)}  # VOC's person, tv/monitor
    for index, rgb in expected.items():
        np.testing.assert_array_equal(np.round(colors[index] * 255), rgb)
    np.testing.assert_array_equal(colors[255], [1, 1, 1])
    example = dict(image=np.zeros((8, 12, 3), np.uint8),
                   truth=np.full((2, 3), 255), decoder=np.ones((2, 3), int))
    path = report.plot_examples([example] * 2, ["decoder"], 21, 255,
                                str(tmp_path / "examples.png"))
    from PIL import Image

    width, height = Image.open(path).size
    assert (width, height) == (3 * 2.4 * 80, 2 * 1.8 * 80)  # 3 columns, 2 rows at 80 dpi


def test_image_resolution_and_mask_class_labels_in_process(trained_run, tmp_path):
    data_dir, logdir = trained_run
    out = report.run_report(str(logdir), str(data_dir), "val", cam_labels="mask",
                            resolution="image", output_dir=str(tmp_path), plot=False,
                            verbose=False)
    assert out["cam_labels"] == "mask"
    assert out["sources"]["fused"]["num_pixels"] == 3 * 40 * 40
    assert not (tmp_path / "reliability_val.png").exists()


def test_a_supervised_run_is_refused(tmp_path):
    from core.run_config import write_run_config

    write_run_config(str(tmp_path), {"mode": "supervised", "model": {}, "dataset": {}},
                     "--mode=supervised\n")
    with pytest.raises(ValueError, match="PseudoSeg run"):
        report.build_trainer(str(tmp_path))


def test_a_run_config_without_method_settings_is_refused(tmp_path):
    from core.run_config import write_run_config

    write_run_config(str(tmp_path), {"mode": "pseudoseg", "model": {}, "dataset": {}})
    with pytest.raises(ValueError, match="no 'pseudoseg' section"):
        report.build_trainer(str(tmp_path))
