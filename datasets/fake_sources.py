"""Tiny fake datasets in the real on-disk formats (tests, benchmarks).

Writes VOC 2012 (+ SBD), COCO 2017 and image-folder trees with random images
and block-structured masks, and returns what each file holds so callers can
compare converted records with the sources. Nothing is downloaded.
"""

import dataclasses
import io
import json
import os
from typing import Dict, List, Optional, Sequence, Tuple
from xml.etree import ElementTree

import numpy as np
from PIL import Image
import scipy.io

from datasets import dataset_info


@dataclasses.dataclass
class SourceImage:
    """One generated image: its files and the arrays they decode to."""
    image_id: str
    image_path: str
    image: np.ndarray            # uint8 [H, W, 3] as Pillow decodes the file
    mask: Optional[np.ndarray]   # uint8 [H, W] raw class values (None: no mask)
    mask_path: Optional[str] = None


def random_image(rng: np.random.Generator, height: int, width: int
                 ) -> np.ndarray:
    """A smooth colour gradient plus noise, uint8 [H, W, 3]."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([255 * yy / max(height - 1, 1),
                     255 * xx / max(width - 1, 1),
                     np.full_like(yy, rng.uniform(0, 255))], axis=-1)
    noise = rng.normal(0, 20, size=(height, width, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def random_mask(rng: np.random.Generator, height: int, width: int,
                classes: Sequence[int], ignore_label: Optional[int] = None,
                num_blocks: int = 4) -> np.ndarray:
    """Background 0 with ``num_blocks`` random class rectangles, uint8 [H, W].

    With ``ignore_label``, each rectangle gets a one-pixel ignore border (like
    VOC's void outlines).
    """
    mask = np.zeros((height, width), np.uint8)
    for _ in range(num_blocks):
        cls = int(rng.choice(classes))
        y0 = int(rng.integers(0, height - 2))
        x0 = int(rng.integers(0, width - 2))
        y1 = int(rng.integers(y0 + 2, height + 1))
        x1 = int(rng.integers(x0 + 2, width + 1))
        if ignore_label is not None:
            mask[y0:y1, x0:x1] = ignore_label
            mask[y0 + 1:y1 - 1, x0 + 1:x1 - 1] = cls
        else:
            mask[y0:y1, x0:x1] = cls
    return mask


def save_jpeg(path: str, image: np.ndarray, quality: int = 90) -> np.ndarray:
    """Writes a JPEG; returns the pixels Pillow decodes from it."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    with open(path, "wb") as f:
        f.write(buffer.getvalue())
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def save_png(path: str, array: np.ndarray,
             palette: Optional[Sequence[Tuple[int, int, int]]] = None) -> None:
    """Writes a PNG (palette mode when ``palette`` is given)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image = Image.fromarray(array)
    if palette is not None:  # putpalette turns the L image into mode P as is
        image.putpalette([c for rgb in palette for c in rgb])
    image.save(path)


def write_voc_annotation(path: str, image_id: str, height: int, width: int,
                         class_ids: Sequence[int]) -> None:
    """Writes a VOC ``Annotations/<id>.xml`` with one object per class id."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    root = ElementTree.Element("annotation")
    ElementTree.SubElement(root, "folder").text = "VOC2012"
    ElementTree.SubElement(root, "filename").text = image_id + ".jpg"
    size = ElementTree.SubElement(root, "size")
    ElementTree.SubElement(size, "width").text = str(width)
    ElementTree.SubElement(size, "height").text = str(height)
    ElementTree.SubElement(size, "depth").text = "3"
    ElementTree.SubElement(root, "segmented").text = "1"
    for class_id in class_ids:
        obj = ElementTree.SubElement(root, "object")
        ElementTree.SubElement(obj, "name").text = (
            dataset_info.VOC_CLASS_NAMES[class_id])
        ElementTree.SubElement(obj, "difficult").text = "0"
        box = ElementTree.SubElement(obj, "bndbox")
        for tag, value in (("xmin", 1), ("ymin", 1), ("xmax", width),
                           ("ymax", height)):
            ElementTree.SubElement(box, tag).text = str(value)
    ElementTree.ElementTree(root).write(path)


def write_sbd_mat(path: str, mask: np.ndarray) -> None:
    """Writes an SBD ``cls/<id>.mat`` whose ``GTcls.Segmentation`` is ``mask``."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    present = np.unique(mask[(mask > 0) & (mask < 255)]).astype(np.uint8)
    scipy.io.savemat(path, {"GTcls": {
        "Segmentation": mask,
        "Boundaries": np.zeros((1, 20), dtype=object),
        "CategoriesPresent": present,
    }})


def _write_list(path: str, ids: Sequence[str]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("".join(i + "\n" for i in ids))


@dataclasses.dataclass
class VocTree:
    """A generated VOC 2012 + SBD tree."""
    voc_root: str
    sbd_root: str
    images: Dict[str, SourceImage]  # the image/mask each id must convert to
    voc_train: List[str]
    voc_val: List[str]
    sbd_train: List[str]
    sbd_val: List[str]

    @property
    def train_aug(self) -> List[str]:
        """(SBD train ∪ SBD val ∪ VOC train) − VOC val, sorted."""
        pool = set(self.sbd_train) | set(self.sbd_val) | set(self.voc_train)
        return sorted(pool - set(self.voc_val))


def write_voc_tree(root: str, seed: int = 0) -> VocTree:
    """Writes a small VOC 2012 + SBD tree under ``root``.

    VOC train ``2007_000001..3``, VOC val ``2007_000004..5``; SBD train holds
    ``2007_000003`` (whose VOC PNG must win over its different .mat),
    ``2008_000001..2`` and the VOC val id ``2007_000004`` (excluded from
    train_aug); SBD val holds ``2008_000003`` and ``2007_000005``. Images are
    20..28 x 30..36 pixels.
    """
    rng = np.random.default_rng(seed)
    voc_root = os.path.join(root, "VOCdevkit", "VOC2012")
    sbd_root = os.path.join(root, "benchmark_RELEASE", "dataset")
    palette = dataset_info.generated_colormap(256)
    voc_train = ["2007_000001", "2007_000002", "2007_000003"]
    voc_val = ["2007_000004", "2007_000005"]
    sbd_train = ["2007_000003", "2008_000001", "2008_000002", "2007_000004"]
    sbd_val = ["2008_000003", "2007_000005"]
    images: Dict[str, SourceImage] = {}
    for image_id in sorted(set(voc_train + voc_val + sbd_train + sbd_val)):
        height = int(rng.integers(20, 29))
        width = int(rng.integers(30, 37))
        pixels = random_image(rng, height, width)
        in_voc = image_id in voc_train or image_id in voc_val
        image_dir = (os.path.join(voc_root, "JPEGImages") if in_voc
                     else os.path.join(sbd_root, "img"))
        image_path = os.path.join(image_dir, image_id + ".jpg")
        decoded = save_jpeg(image_path, pixels)
        if not in_voc:  # SBD-only ids exist in VOC's JPEGImages too on real data
            save_jpeg(os.path.join(voc_root, "JPEGImages", image_id + ".jpg"),
                      pixels)
            image_path = os.path.join(voc_root, "JPEGImages", image_id + ".jpg")
        if in_voc:
            mask = random_mask(rng, height, width, range(1, 21), ignore_label=255)
            mask_path = os.path.join(voc_root, "SegmentationClass",
                                     image_id + ".png")
            save_png(mask_path, mask, palette=palette)
        if image_id in sbd_train or image_id in sbd_val:
            sbd_mask = random_mask(rng, height, width, range(1, 21))
            write_sbd_mat(os.path.join(sbd_root, "cls", image_id + ".mat"),
                          sbd_mask)
            save_jpeg(os.path.join(sbd_root, "img", image_id + ".jpg"), pixels)
            if not in_voc:
                mask = sbd_mask
                mask_path = os.path.join(sbd_root, "cls", image_id + ".mat")
        write_voc_annotation(
            os.path.join(voc_root, "Annotations", image_id + ".xml"), image_id,
            height, width, sorted(int(v) for v in set(np.unique(mask)) - {0, 255}))
        images[image_id] = SourceImage(image_id, image_path, decoded, mask,
                                       mask_path)
    seg = os.path.join(voc_root, "ImageSets", "Segmentation")
    _write_list(os.path.join(seg, "train.txt"), voc_train)
    _write_list(os.path.join(seg, "val.txt"), voc_val)
    _write_list(os.path.join(sbd_root, "train.txt"), sbd_train)
    _write_list(os.path.join(sbd_root, "val.txt"), sbd_val)
    return VocTree(voc_root, sbd_root, images, voc_train, voc_val, sbd_train,
                   sbd_val)


def rle_counts(mask: np.ndarray) -> List[int]:
    """COCO's uncompressed RLE counts of a binary mask (column-major runs)."""
    flat = np.asarray(mask, bool).flatten(order="F")
    counts, current, run = [], False, 0
    for value in flat:
        if value != current:
            counts.append(run)
            run, current = 0, value
        run += 1
    counts.append(run)
    return counts


@dataclasses.dataclass
class CocoTree:
    """A generated COCO 2017 tree."""
    root: str
    images: Dict[str, SourceImage]  # expected semantic masks (81-class rule)
    train_ids: List[str]
    val_ids: List[str]
    category_ids: List[int]


def write_coco_tree(root: str, seed: int = 0) -> CocoTree:
    """Writes a small COCO tree: rectangles as polygons, a crowd RLE, overlaps.

    Categories have the non-contiguous ids 1, 3, 7 (classes 1, 2, 3). Each
    annotated image holds two overlapping rectangle polygons (the later one
    wins), one uncompressed-RLE crowd region (255 over everything) and, in
    train, one compressed-RLE instance; one train image has no annotation
    (all background). The expected masks are composed here with NumPy.
    """
    from pycocotools import mask as mask_utils  # pylint: disable=g-import-not-at-top
    rng = np.random.default_rng(seed)
    category_ids = [7, 1, 3]  # deliberately unsorted in the json
    class_of = {cat: rank + 1 for rank, cat in enumerate(sorted(category_ids))}
    images: Dict[str, SourceImage] = {}
    split_ids = {"train": [], "val": []}
    annotation_id = 1
    coco_id = 1
    for split, count in (("train", 4), ("val", 2)):
        entries, annotations = [], []
        for index in range(count):
            height = int(rng.integers(20, 29))
            width = int(rng.integers(30, 37))
            file_id = f"{coco_id:012d}"
            path = os.path.join(root, f"{split}2017", file_id + ".jpg")
            decoded = save_jpeg(path, random_image(rng, height, width))
            entries.append({"id": coco_id, "file_name": file_id + ".jpg",
                            "height": height, "width": width})
            expected = np.zeros((height, width), np.uint8)
            anns = []
            if not (split == "train" and index == 0):
                for _ in range(2):
                    cat = int(rng.choice(category_ids))
                    x0, y0 = int(rng.integers(0, width // 2)), int(rng.integers(0, height // 2))
                    x1 = int(rng.integers(x0 + 3, width + 1))
                    y1 = int(rng.integers(y0 + 3, height + 1))
                    anns.append({"category_id": cat, "iscrowd": 0, "segmentation": [
                        [x0, y0, x1, y0, x1, y1, x0, y1]]})
                    expected[y0:y1, x0:x1] = class_of[cat]
                if split == "train":
                    blob = np.zeros((height, width), np.uint8)
                    blob[2:6, width - 8:width - 2] = 1
                    rle = mask_utils.encode(np.asfortranarray(blob))
                    rle["counts"] = rle["counts"].decode("ascii")
                    cat = int(rng.choice(category_ids))
                    anns.append({"category_id": cat, "iscrowd": 0, "segmentation": rle})
                    expected[blob > 0] = class_of[cat]
                crowd = np.zeros((height, width), bool)
                crowd[height - 5:height - 1, 1:7] = True
                anns.append({"category_id": int(rng.choice(category_ids)),
                             "iscrowd": 1, "segmentation": {
                                 "counts": rle_counts(crowd), "size": [height, width]}})
                expected[crowd] = 255
            for ann in anns:
                ann.update({"id": annotation_id, "image_id": coco_id, "area": 1.0,
                            "bbox": [0, 0, 1, 1]})
                annotation_id += 1
                annotations.append(ann)
            images[file_id] = SourceImage(file_id, path, decoded, expected)
            split_ids[split].append(file_id)
            coco_id += 1
        content = {
            "images": entries,
            "annotations": annotations,
            "categories": [{"id": c, "name": f"cat{c}", "supercategory": "x"}
                           for c in category_ids],
        }
        path = os.path.join(root, "annotations", f"instances_{split}2017.json")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            json.dump(content, f)
    return CocoTree(root, images, split_ids["train"], split_ids["val"],
                    sorted(category_ids))


@dataclasses.dataclass
class FolderTree:
    """A generated image-folder dataset."""
    image_dir: str
    label_dir: str
    list_file: str
    images: Dict[str, SourceImage]


def write_folder_tree(root: str, num_images: int = 6, num_classes: int = 5,
                      ignore_label: int = 5, size: Tuple[int, int] = (20, 30),
                      seed: int = 0, png_every: int = 3,
                      jpeg_quality: int = 90) -> FolderTree:
    """Writes ``images/<stem>.jpg|png``, ``labels/<stem>.png`` and ``list.txt``.

    Every ``png_every``-th image is a PNG (the rest JPEG); masks are grayscale
    PNGs with classes 0..C-1 and some ``ignore_label`` pixels.
    """
    rng = np.random.default_rng(seed)
    image_dir = os.path.join(root, "images")
    label_dir = os.path.join(root, "labels")
    images = {}
    ids = []
    for index in range(num_images):
        stem = f"img_{index:03d}"
        pixels = random_image(rng, *size)
        if png_every and index % png_every == png_every - 1:
            path = os.path.join(image_dir, stem + ".png")
            save_png(path, pixels)
            decoded = pixels
        else:
            path = os.path.join(image_dir, stem + ".jpg")
            decoded = save_jpeg(path, pixels, quality=jpeg_quality)
        mask = random_mask(rng, size[0], size[1], range(num_classes))
        mask[0, : size[1] // 3] = ignore_label
        mask_path = os.path.join(label_dir, stem + ".png")
        save_png(mask_path, mask)
        images[stem] = SourceImage(stem, path, decoded, mask, mask_path)
        ids.append(stem)
    list_file = os.path.join(root, "list.txt")
    _write_list(list_file, ids)
    return FolderTree(image_dir, label_dir, list_file, images)
