"""Converters: VOC + SBD, COCO and folders to TFRecords, read back and compared.

Every test builds a tiny dataset in the real on-disk format under tmp_path
(datasets/fake_sources.py), converts it, reads the records with plain protobuf +
Pillow (not the project's reader) and compares every image and mask with the
source files.
"""

import glob
import io
import json
import os

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from datasets import build_coco
from datasets import build_folder
from datasets import build_voc
from datasets import conversion
from datasets import dataset_info
from datasets import records
from datasets import fake_sources
from datasets.image_io import BadInputError


def read_split(directory, split):
    """{id: dict of decoded features} of a split, via protobuf and Pillow."""
    files = sorted(glob.glob(os.path.join(directory, f"{split}-*")))
    assert files, f"no files for {split} in {directory}"
    out = {}
    for serialized in tf.data.TFRecordDataset(files).as_numpy_iterator():
        example = tf.train.Example.FromString(serialized)
        f = example.features.feature
        image_id = f[records.IMAGE_FILENAME].bytes_list.value[0].decode()
        assert image_id not in out
        entry = {
            "image_bytes": f[records.IMAGE_ENCODED].bytes_list.value[0],
            "format": f[records.IMAGE_FORMAT].bytes_list.value[0].decode(),
            "height": f[records.IMAGE_HEIGHT].int64_list.value[0],
            "width": f[records.IMAGE_WIDTH].int64_list.value[0],
            "class_labels": (list(f[records.CLASS_LABELS].int64_list.value)
                             if records.CLASS_LABELS in f else None),
        }
        entry["image"] = np.asarray(
            Image.open(io.BytesIO(entry["image_bytes"])).convert("RGB"))
        if records.MASK_ENCODED in f:
            assert f[records.MASK_FORMAT].bytes_list.value[0] == b"png"
            mask = Image.open(io.BytesIO(f[records.MASK_ENCODED].bytes_list.value[0]))
            assert mask.mode == "L"
            entry["mask"] = np.asarray(mask)
        else:
            entry["mask"] = None
        out[image_id] = entry
    return out


def assert_matches_sources(split_records, sources, ids, class_labels=False):
    """Each record equals its source image file (bytes and pixels) and mask."""
    assert sorted(split_records) == sorted(ids)
    for image_id in ids:
        rec, src = split_records[image_id], sources[image_id]
        with open(src.image_path, "rb") as f:
            assert rec["image_bytes"] == f.read(), image_id
        np.testing.assert_array_equal(rec["image"], src.image)
        assert (rec["height"], rec["width"]) == src.image.shape[:2]
        np.testing.assert_array_equal(rec["mask"], src.mask, err_msg=image_id)
        if class_labels:
            expected = sorted(int(v) for v in np.unique(src.mask) if 0 < v < 255)
            assert rec["class_labels"] == expected
        else:
            assert rec["class_labels"] is None


def test_voc_and_sbd_splits_match_sources(tmp_path):
    tree = fake_sources.write_voc_tree(str(tmp_path / "src"))
    out = str(tmp_path / "records")
    results = build_voc.convert_voc(tree.voc_root, out, sbd_root=tree.sbd_root,
                                    num_shards=2, class_labels="mask")
    assert tree.train_aug == ["2007_000001", "2007_000002", "2007_000003",
                              "2008_000001", "2008_000002", "2008_000003"]
    for split, ids in (("train", tree.voc_train), ("val", tree.voc_val),
                       ("train_aug", tree.train_aug)):
        assert results[split].num_written == len(ids)
        assert sorted(os.path.basename(p) for p in
                      glob.glob(os.path.join(out, f"{split}-*"))) == [
                          f"{split}-00000-of-00002.tfrecord",
                          f"{split}-00001-of-00002.tfrecord"]
        assert_matches_sources(read_split(out, split), tree.images, ids,
                               class_labels=True)
        assert records.count_records(out, split) == len(ids)
    # 2007_000003 has both a VOC PNG and a (different) SBD .mat: the PNG wins.
    assert tree.images["2007_000003"].mask_path.endswith(".png")
    assert not glob.glob(os.path.join(out, ".*"))  # no temporary files left


def test_voc_mask_keeps_palette_indices_and_255(tmp_path):
    tree = fake_sources.write_voc_tree(str(tmp_path / "src"))
    out = str(tmp_path / "records")
    build_voc.convert_voc(tree.voc_root, out, splits=["train"])
    mask = read_split(out, "train")["2007_000001"]["mask"]
    assert 255 in mask and set(np.unique(mask)) - {255} <= set(range(21))
    png = np.asarray(Image.open(tree.images["2007_000001"].mask_path))
    np.testing.assert_array_equal(mask, png)


def test_voc_split_lists_in_published_formats(tmp_path):
    tree = fake_sources.write_voc_tree(str(tmp_path / "src"))
    plain = tmp_path / "16_clean_3.txt"
    plain.write_text("2007_000002\n\n2008_000001\n")
    unimatch = tmp_path / "labeled.txt"
    unimatch.write_text("JPEGImages/2007_000001.jpg SegmentationClass/"
                        "2007_000001.png\nJPEGImages/2008_000003.jpg "
                        "SegmentationClass/2008_000003.png\n")
    out = str(tmp_path / "records")
    build_voc.convert_voc(
        tree.voc_root, out, sbd_root=tree.sbd_root, splits=[],
        split_lists={"16_clean_3": str(plain), "lab": str(unimatch)},
        class_labels="annotations")
    # Annotation XMLs list the mask's classes here, so labels equal the masks'.
    assert_matches_sources(read_split(out, "16_clean_3"), tree.images,
                           ["2007_000002", "2008_000001"], class_labels=True)
    assert_matches_sources(read_split(out, "lab"), tree.images,
                           ["2007_000001", "2008_000003"], class_labels=True)


def test_voc_annotation_labels_come_from_the_xml(tmp_path):
    tree = fake_sources.write_voc_tree(str(tmp_path / "src"))
    xml = os.path.join(tree.voc_root, "Annotations", "2007_000001.xml")
    text = open(xml).read()
    names = sorted(set(dataset_info.VOC_CLASS_NAMES[1:]) - {
        n for n in dataset_info.VOC_CLASS_NAMES if f"<name>{n}<" in text})
    text = text.replace("</annotation>", f"<object><name>{names[0]}</name>"
                        "</object></annotation>")
    open(xml, "w").write(text)
    out = str(tmp_path / "records")
    build_voc.convert_voc(tree.voc_root, out, splits=["train"],
                          class_labels="annotations")
    mask = tree.images["2007_000001"].mask
    expected = sorted({int(v) for v in np.unique(mask) if 0 < v < 255}
                      | {dataset_info.VOC_CLASS_NAMES.index(names[0])})
    assert read_split(out, "train")["2007_000001"]["class_labels"] == expected


def test_voc_train_aug_needs_sbd(tmp_path):
    tree = fake_sources.write_voc_tree(str(tmp_path / "src"))
    with pytest.raises(ValueError, match="train_aug needs --sbd_root"):
        build_voc.convert_voc(tree.voc_root, str(tmp_path / "out"))


def test_sbd_mat_without_segmentation_is_bad_input(tmp_path):
    tree = fake_sources.write_voc_tree(str(tmp_path / "src"))
    import scipy.io  # pylint: disable=g-import-not-at-top
    bad = os.path.join(tree.sbd_root, "cls", "2008_000001.mat")
    scipy.io.savemat(bad, {"GTcls": {"Boundaries": np.zeros(3)}})
    with pytest.raises(BadInputError, match="no GTcls.Segmentation"):
        build_voc.convert_voc(tree.voc_root, str(tmp_path / "out"),
                              sbd_root=tree.sbd_root, splits=["train_aug"])


def test_coco_semantic_masks(tmp_path):
    tree = fake_sources.write_coco_tree(str(tmp_path / "coco"))
    listed = tmp_path / "512_all.txt"
    listed.write_text(f"train2017/{tree.train_ids[1]}\n"
                      f"train2017/{tree.train_ids[3]}\n")
    out = str(tmp_path / "records")
    results = build_coco.convert_coco(
        tree.root, out, split_lists={"512_all": str(listed)}, num_shards=3,
        class_labels=True)
    assert results["train"].num_written == 4
    train = read_split(out, "train")
    assert_matches_sources(train, tree.images, tree.train_ids,
                           class_labels=True)
    assert_matches_sources(read_split(out, "val"), tree.images, tree.val_ids,
                           class_labels=True)
    assert_matches_sources(read_split(out, "512_all"), tree.images,
                           [tree.train_ids[1], tree.train_ids[3]],
                           class_labels=True)
    # The image without annotations is all background; crowd pixels are 255.
    assert not train[tree.train_ids[0]]["mask"].any()
    assert (train[tree.train_ids[1]]["mask"] == 255).sum() == 4 * 6
    # Category ids 1, 3, 7 map to classes 1, 2, 3.
    values = set()
    for entry in train.values():
        values |= set(np.unique(entry["mask"]).tolist())
    assert values <= {0, 1, 2, 3, 255}


def test_coco_unknown_list_id(tmp_path):
    tree = fake_sources.write_coco_tree(str(tmp_path / "coco"))
    listed = tmp_path / "list.txt"
    listed.write_text("train2017/000000999999\n")
    with pytest.raises(BadInputError, match="000000999999"):
        build_coco.convert_coco(tree.root, str(tmp_path / "out"), splits=["train"],
                                split_lists={"x": str(listed)})


def test_coco_image_size_differs_from_json(tmp_path):
    tree = fake_sources.write_coco_tree(str(tmp_path / "coco"))
    path = tree.images[tree.val_ids[0]].image_path
    fake_sources.save_jpeg(path, np.zeros((5, 5, 3), np.uint8))
    with pytest.raises(BadInputError, match="says"):
        build_coco.convert_coco(tree.root, str(tmp_path / "out"), splits=["val"])


def _convert_folder(tree, out, **kwargs):
    return build_folder.convert_folder(
        image_dir=tree.image_dir, label_dir=tree.label_dir,
        list_file=tree.list_file, output_dir=out, split_name="train",
        num_classes=5, ignore_label=5, **kwargs)


def test_folder_dataset_and_its_info_json(tmp_path):
    tree = fake_sources.write_folder_tree(str(tmp_path / "src"))
    out = str(tmp_path / "records")
    _convert_folder(tree, out, dataset_name="toy",
                    class_names=["a", "b", "c", "d", "e"], num_shards=4)
    got = read_split(out, "train")
    assert_matches_sources(got, tree.images, list(tree.images))
    assert {e["format"] for e in got.values()} == {"jpeg", "png"}
    with open(os.path.join(out, "dataset_info.json")) as f:
        assert json.load(f) == {"name": "toy", "num_classes": 5,
                                "ignore_label": 5,
                                "class_names": ["a", "b", "c", "d", "e"]}
    info = dataset_info.get_dataset_info("folder", out)
    assert (info.name, info.num_classes, info.ignore_label) == ("toy", 5, 5)
    assert info.class_names == ("a", "b", "c", "d", "e")
    assert dataset_info.get_dataset_info("toy", out) == info
    # A second split with a different class count must not overwrite the json.
    with pytest.raises(ValueError, match="already describes"):
        build_folder.convert_folder(
            image_dir=tree.image_dir, label_dir=tree.label_dir, output_dir=out,
            split_name="val", num_classes=6, ignore_label=255)


def test_folder_without_labels_writes_no_masks(tmp_path):
    tree = fake_sources.write_folder_tree(str(tmp_path / "src"), num_images=3)
    out = str(tmp_path / "records")
    build_folder.convert_folder(image_dir=tree.image_dir, output_dir=out,
                                split_name="unlabeled", num_classes=5,
                                ignore_label=5)
    got = read_split(out, "unlabeled")
    assert sorted(got) == sorted(tree.images)
    for image_id, entry in got.items():
        assert entry["mask"] is None
        np.testing.assert_array_equal(entry["image"], tree.images[image_id].image)


def _corrupt_image(tree):
    path = tree.images["img_001"].image_path
    with open(path, "r+b") as f:
        f.seek(200)
        f.write(b"\x00" * 10)
        f.truncate(300)
    return path, "corrupt"


def _size_mismatch(tree):
    path = tree.images["img_002"].mask_path
    fake_sources.save_png(path, np.zeros((7, 9), np.uint8))
    return path, "mask is 7x9"


def _bad_label_value(tree):
    path = tree.images["img_003"].mask_path
    mask = tree.images["img_003"].mask.copy()
    mask[3, 4], mask[5, 6] = 9, 200
    fake_sources.save_png(path, mask)
    return path, r"label values \[9, 200\] are neither classes 0..4 nor the " \
        "ignore label 5"


def _missing_image(tree):
    with open(tree.list_file, "a") as f:
        f.write("img_404\n")
    return os.path.join(tree.image_dir, "img_404.jpg"), "no file for id 'img_404'"


def _missing_mask(tree):
    path = tree.images["img_004"].mask_path
    os.remove(path)
    return path, "no file for id 'img_004'"


def _rgb_mask(tree):
    path = tree.images["img_000"].mask_path
    fake_sources.save_png(path, np.zeros((20, 30, 3), np.uint8))
    return path, "single-channel"


BAD_INPUTS = [_corrupt_image, _size_mismatch, _bad_label_value, _missing_image,
              _missing_mask, _rgb_mask]


@pytest.mark.parametrize("make_bad", BAD_INPUTS, ids=lambda f: f.__name__)
def test_bad_input_stops_or_is_skipped(tmp_path, make_bad):
    tree = fake_sources.write_folder_tree(str(tmp_path / "src"))
    out = str(tmp_path / "records")
    path, problem = make_bad(tree)
    with pytest.raises(BadInputError, match=problem) as error:
        _convert_folder(tree, out)
    assert error.value.path == path
    assert not glob.glob(os.path.join(out, "train-*"))
    assert not glob.glob(os.path.join(out, ".*"))
    results = _convert_folder(tree, out, skip_bad=True)
    assert len(results["train"].skipped) == 1
    assert results["train"].skipped[0][0] == path
    got = read_split(out, "train")
    expected_ids = [i for i in conversion.read_id_list(tree.list_file)
                    if i in tree.images and path not in (
                        tree.images[i].image_path, tree.images[i].mask_path)]
    assert_matches_sources(got, tree.images, expected_ids)
    assert records.read_splits_json(out)["train"]["num_skipped"] == 1


def test_rerun_replaces_and_failure_keeps_previous(tmp_path):
    tree = fake_sources.write_folder_tree(str(tmp_path / "src"))
    out = str(tmp_path / "records")
    _convert_folder(tree, out, num_shards=4)
    before = sorted(os.listdir(out))
    _convert_folder(tree, out, num_shards=2)
    files = sorted(glob.glob(os.path.join(out, "train-*")))
    assert [os.path.basename(f) for f in files] == [
        "train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord"]
    assert records.count_records(out, "train") == 6
    after_good = {f: open(f, "rb").read() for f in files}
    _corrupt_image(tree)
    with pytest.raises(BadInputError):
        _convert_folder(tree, out, num_shards=3)
    assert {f: open(f, "rb").read() for f in
            sorted(glob.glob(os.path.join(out, "train-*")))} == after_good
    assert len(before) == 4 + 2  # 4 shards + dataset_info.json + splits.json


def test_id_lists_are_normalised_and_checked(tmp_path):
    path = tmp_path / "list.txt"
    path.write_text("a\ntrain2017/000000000009\n\nJPEGImages/b.jpg x.png\n"
                    "dir/c.v1\n")
    assert conversion.read_id_list(str(path)) == [
        "a", "000000000009", "b", "c.v1"]
    path.write_text("a\nb\nJPEGImages/a.jpg\n")
    with pytest.raises(ValueError, match=r"list.txt:3: id 'a' already listed "
                       "on line 1"):
        conversion.read_id_list(str(path))
    with pytest.raises(ValueError, match="NAME=FILE"):
        conversion.parse_split_lists(["nofile"])
    with pytest.raises(ValueError, match="split name"):
        conversion.parse_split_lists(["bad-name=x.txt"])


def test_camvid_style_class_names_file(tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("Sky\nBuilding\n")
    assert build_folder.read_class_names([str(names)], 2) == ["Sky", "Building"]
    names.write_text('["Sky", "Building"]')
    assert build_folder.read_class_names([str(names)], 2) == ["Sky", "Building"]
    with pytest.raises(ValueError, match="3 names"):
        build_folder.read_class_names(["a", "b", "c"], 2)
