"""Dataset descriptors: registered datasets, folder json, tfds, validation."""

import json

import pytest

from datasets import dataset_info


def test_pascal_voc_descriptor():
    info = dataset_info.get_dataset_info("pascal_voc_seg")
    assert (info.num_classes, info.ignore_label) == (21, 255)
    assert info.class_names[0] == "background"
    assert info.class_names[15] == "person" and len(info.class_names) == 21
    assert dict(info.split_sizes) == {
        "train": 1464, "val": 1449, "train_aug": 10582, "16_clean_3": 92,
        "8_clean": 183, "4_clean": 366, "2_clean": 732}
    assert info.eval_crop_size == (513, 513)
    # The VOC palette: index 1 aeroplane, 15 person, 255 the void border.
    assert info.colormap[0] == (0, 0, 0)
    assert info.colormap[1] == (128, 0, 0)
    assert info.colormap[15] == (192, 128, 128)
    assert info.colormap[255] == (224, 224, 192)
    assert len(set(info.colormap)) == 256


def test_coco_descriptor():
    info = dataset_info.get_dataset_info("coco")
    assert (info.num_classes, info.ignore_label) == (81, 255)
    assert len(info.class_names) == 81 and info.class_names[1] == "person"
    assert info.class_names[80] == "toothbrush"
    assert len(set(info.class_names)) == 81
    assert dict(info.split_sizes) == {
        "train": 118287, "val": 5000, "32_all": 3697, "64_all": 1849,
        "128_all": 925, "256_all": 463, "512_all": 232}
    assert info.eval_crop_size == (641, 641)


def test_msrc_descriptor(tmp_path):
    info = dataset_info.get_dataset_info("msrc")
    assert (info.num_classes, info.ignore_label) == (16, 255)
    assert info.class_names[:3] == ("background", "aeroplane", "bicycle")
    assert info.class_names[12] == "face" and info.class_names[15] == "sign"
    assert info.eval_crop_size == (321, 321)
    assert info.split_sizes["train"] == 276 and info.split_sizes["val"] == 59
    for seed in (0, 1, 2):
        assert info.split_sizes[f"labeled_1_4_seed{seed}"] == 69
        assert info.split_sizes[f"unlabeled_1_4_seed{seed}"] == 207
        assert info.split_sizes[f"labeled_1_8_seed{seed}"] == 34
        assert info.split_sizes[f"unlabeled_1_8_seed{seed}"] == 242
    assert dataset_info.msrc_split_names(8, 2) == ("labeled_1_8_seed2",
                                                   "unlabeled_1_8_seed2")
    # Records converted by build_folder.py with the registered settings are
    # read as the registered descriptor (with its eval crop and split sizes);
    # records that call themselves msrc but differ are refused.
    written = dataset_info.folder_dataset_info(
        "msrc", 16, 255, dataset_info.MSRC_CLASS_NAMES)
    dataset_info.write_dataset_info_json(written, str(tmp_path))
    assert dataset_info.get_dataset_info("msrc", str(tmp_path)) is info
    other = tmp_path / "other"
    other.mkdir()
    dataset_info.write_dataset_info_json(
        dataset_info.folder_dataset_info("msrc", 17, 255), str(other))
    with pytest.raises(ValueError, match="num_classes=17.*registered"):
        dataset_info.get_dataset_info("msrc", str(other))


def test_descriptor_is_frozen():
    info = dataset_info.get_dataset_info("coco")
    with pytest.raises(Exception):
        info.num_classes = 3
    with pytest.raises(TypeError):
        info.split_sizes["train"] = 1


def test_folder_json_roundtrip(tmp_path):
    info = dataset_info.folder_dataset_info(
        "camvid", 11, 11, ["Sky", "Building", "Pole", "Road", "Pavement", "Tree",
                           "SignSymbol", "Fence", "Car", "Pedestrian",
                           "Bicyclist"])
    path = dataset_info.write_dataset_info_json(info, str(tmp_path))
    assert json.load(open(path))["ignore_label"] == 11
    assert dataset_info.get_dataset_info("folder", str(tmp_path)) == info
    assert dataset_info.get_dataset_info("camvid", str(tmp_path)) == info
    # Writing the same description again is fine; a different one is refused.
    dataset_info.write_dataset_info_json(info, str(tmp_path))
    other = dataset_info.folder_dataset_info("camvid", 12, 255)
    with pytest.raises(ValueError, match="already describes"):
        dataset_info.write_dataset_info_json(other, str(tmp_path))


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'nope'.*no "
                       "dataset_info.json"):
        dataset_info.get_dataset_info("nope", str(tmp_path))
    with pytest.raises(ValueError, match="only be given for tfds"):
        dataset_info.get_dataset_info("coco", num_classes=3)
    with pytest.raises(ValueError, match="collides with class 3"):
        dataset_info.folder_dataset_info("x", 5, 3)
    with pytest.raises(ValueError, match="2 class names for 3 classes"):
        dataset_info.folder_dataset_info("x", 3, 255, ["a", "b"])
    (tmp_path / "dataset_info.json").write_text('{"num_classes": 3}')
    with pytest.raises(ValueError, match="lacks the keys \\['ignore_label'\\]"):
        dataset_info.get_dataset_info("folder", str(tmp_path))


def test_tfds_descriptor():
    info = dataset_info.get_dataset_info("tfds:oxford_iiit_pet", num_classes=3,
                                         ignore_label=3)
    assert info.is_tfds and info.tfds_name == "oxford_iiit_pet"
    assert info.class_names == ("class_0", "class_1", "class_2")
    assert not dataset_info.get_dataset_info("coco").is_tfds
