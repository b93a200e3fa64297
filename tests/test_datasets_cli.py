"""Converter command lines (real subprocesses) and make_splits."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

from datasets import build_folder
from datasets import conversion
from datasets import make_splits
from datasets import records
from datasets import fake_sources

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(script, *args):
    """Runs ``python datasets/<script> args`` from the repo root."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("PYTHONPATH", None)  # the script must bootstrap sys.path itself
    return subprocess.run(
        [sys.executable, os.path.join("datasets", script), *args], cwd=REPO,
        env=env, capture_output=True, text=True, timeout=300)


def test_build_folder_cli_bad_input_then_success(tmp_path):
    tree = fake_sources.write_folder_tree(str(tmp_path / "src"), num_images=8)
    bad_mask = tree.images["img_002"].mask.copy()
    bad_mask[0, 0] = 77
    fake_sources.save_png(tree.images["img_002"].mask_path, bad_mask)
    out = str(tmp_path / "records")
    args = [f"--image_dir={tree.image_dir}", f"--label_dir={tree.label_dir}",
            f"--list_file={tree.list_file}", "--split_name=train",
            f"--output_dir={out}", "--num_classes=5", "--ignore_label=5",
            "--num_workers=2", "--progress_every=3"]
    failed = run_script("build_folder.py", *args)
    assert failed.returncode == 1, failed.stderr
    assert (f"error: {tree.images['img_002'].mask_path}: label values [77] are "
            "neither classes 0..4 nor the ignore label 5") in failed.stderr
    assert not any(n.startswith("train-") for n in os.listdir(out))

    done = run_script("build_folder.py", *args, "--skip_bad")
    assert done.returncode == 0, done.stderr
    assert "train: 7 examples, 1 skipped" in done.stdout
    assert "train: 6/8 images (1 skipped)" in done.stderr  # progress lines
    assert "skipped 1 bad images (of 8)" in done.stderr
    assert records.count_records(out, "train") == 7


HELP_FLAGS = {
    "build_voc.py": ("--voc_root", "--sbd_root", "--splits",
                     "--class_labels_source"),
    "build_coco.py": ("--coco_root", "--splits"),
    "build_folder.py": ("--image_dir", "--label_dir", "--list_file",
                        "--split_name", "--dataset_name", "--num_classes",
                        "--ignore_label", "--class_names"),
}
COMMON_FLAGS = ("--output_dir", "--num_shards", "--split_list", "--skip_bad",
                "--num_workers", "--progress_every", "--class_labels")


@pytest.mark.parametrize("script", sorted(HELP_FLAGS))
def test_help_documents_every_flag(script):
    shown = run_script(script, "--help")
    # absl prints the help on stdout and exits with status 1 by design.
    assert shown.returncode == 1
    for flag in HELP_FLAGS[script] + COMMON_FLAGS:
        name = flag[2:]
        assert re.search(rf"--(\[no\])?{name}: \S", shown.stdout), flag


def _pool(num_images, rare_index, seed=0):
    """{id: classes}: class 1 everywhere, class 9 only in image ``rare_index``."""
    rng = np.random.default_rng(seed)
    pool = {}
    for i in range(num_images):
        classes = {0, 1} | {int(c) for c in rng.choice([2, 3, 4], size=1)}
        if i == rare_index:
            classes.add(9)
        pool[f"id{i:03d}"] = classes
    return pool


def test_sampling_covers_every_class_and_is_deterministic():
    pool = _pool(40, rare_index=17)
    first, missing = make_splits.sample_labeled(pool, 5, seed=3)
    again, _ = make_splits.sample_labeled(pool, 5, seed=3)
    other, _ = make_splits.sample_labeled(pool, 5, seed=4)
    assert first == again and first != other and not missing
    for subset in (first, other):
        assert len(set(subset)) == 5 and "id017" in subset
        covered = set().union(*(pool[i] for i in subset))
        assert covered == set().union(*pool.values())


def test_sampling_greedy_fallback_and_impossible_coverage():
    pool = _pool(40, rare_index=5)
    subset, missing = make_splits.sample_labeled(pool, 3, seed=0, max_tries=0)
    assert "id005" in subset and not missing and len(set(subset)) == 3
    pool["id006"] |= {10}
    pool["id007"] |= {11}
    subset, missing = make_splits.sample_labeled(pool, 2, seed=0, max_tries=5)
    assert len(subset) == 2 and missing  # 2 images cannot hold 9, 10, 11 & co


def test_make_splits_from_records_and_from_masks_agree(tmp_path):
    tree = fake_sources.write_folder_tree(str(tmp_path / "src"), num_images=12)
    out = str(tmp_path / "records")
    build_folder.convert_folder(
        image_dir=tree.image_dir, label_dir=tree.label_dir,
        list_file=tree.list_file, output_dir=out, split_name="train",
        num_classes=5, ignore_label=5)
    from_records = make_splits.classes_from_records(out, "train", 5)
    from_masks = make_splits.classes_from_masks(
        conversion.read_id_list(tree.list_file), tree.label_dir, 5)
    assert from_records == from_masks
    for image_id, src in tree.images.items():
        assert from_masks[image_id] == set(np.unique(src.mask).tolist()) - {5}
    labeled_path = str(tmp_path / "l.txt")
    unlabeled_path = str(tmp_path / "u.txt")
    labeled, unlabeled = make_splits.make_splits(
        from_masks, labeled_path, unlabeled_path, seed=1, denominator=4)
    assert len(labeled) == 3 and labeled == sorted(labeled)
    assert conversion.read_id_list(labeled_path) == labeled
    assert conversion.read_id_list(unlabeled_path) == unlabeled
    assert sorted(labeled + unlabeled) == sorted(tree.images)
    assert unlabeled == [i for i in conversion.read_id_list(tree.list_file)
                         if i not in labeled]
    with pytest.raises(ValueError, match="exactly one"):
        make_splits.make_splits(from_masks, labeled_path, None, seed=1)


def test_make_splits_cli(tmp_path):
    tree = fake_sources.write_folder_tree(str(tmp_path / "src"), num_images=6)
    labeled = tmp_path / "l.txt"
    result = run_script("make_splits.py", f"--list_file={tree.list_file}",
                        f"--label_dir={tree.label_dir}", "--ignore_label=5",
                        "--num_labeled=2", "--seed=7",
                        f"--labeled_list={labeled}")
    assert result.returncode == 0, result.stderr
    expected, _ = make_splits.sample_labeled(
        make_splits.classes_from_masks(conversion.read_id_list(tree.list_file),
                                       tree.label_dir, 5), 2, seed=7)
    assert labeled.read_text().split() == sorted(expected)
