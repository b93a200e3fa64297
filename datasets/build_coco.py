"""Converts COCO 2017 instance annotations to 81-class semantic TFRecords.

    python datasets/build_coco.py --coco_root=.../coco2017 \\
        --output_dir=data/coco_records --split_list=512_all=splits/512_all.txt

Reads ``{coco_root}/annotations/instances_{train,val}2017.json`` and
``{coco_root}/{train,val}2017/<file_name>`` and writes splits ``train`` and
``val`` (``--splits``) plus every ``--split_list NAME=FILE`` (ids looked up in
all loaded annotation files; ``train2017/000000177254`` lines work as they
are).

Mask convention (rasterised with pycocotools, nothing hand-written):

* class index = 1 + rank of the annotation's category id among the sorted
  category ids of the annotation file (80 categories -> classes 1..80);
  background is 0;
* non-crowd instances are painted in the order of the annotation list, so
  where instances overlap the one later in the list wins;
* pixels of ``iscrowd`` annotations are then set to 255 (ignored), overriding
  any instance;
* images without annotations are kept, with an all-background mask.

Images are stored byte-for-byte, the record id is the file name without
extension (``000000177254``).
"""

if __package__ in (None, ""):
    import os, sys  # pylint: disable=g-multiple-import
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import functools
import os
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

from absl import app
from absl import flags
from absl import logging
import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from datasets import conversion
from datasets import dataset_info
from datasets import image_io
from datasets.image_io import BadInputError

STANDARD_SPLITS = ("train", "val")
CROWD_LABEL = 255


class CocoItem(NamedTuple):
    """One image and its annotations, ready for a worker process."""
    image_id: str            # file name without extension
    image_path: Optional[str]  # None: id not found in any annotation file
    height: int
    width: int
    annotations: Tuple[Tuple[int, Any, bool], ...]  # (class, segmentation, crowd)
    source: str              # annotation file (for error messages)


def annotation_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """Rasterises one COCO segmentation (polygons, RLE) with pycocotools."""
    if isinstance(segmentation, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    return mask_utils.decode(rle).astype(bool)


def semantic_mask(annotations: Sequence[Tuple[int, Any, bool]], height: int,
                  width: int) -> np.ndarray:
    """Composes instance annotations into one semantic mask (module docstring)."""
    mask = np.zeros((height, width), np.uint8)
    crowd = np.zeros((height, width), bool)
    for class_index, segmentation, is_crowd in annotations:
        pixels = annotation_mask(segmentation, height, width)
        if is_crowd:
            crowd |= pixels
        else:
            mask[pixels] = class_index
    mask[crowd] = CROWD_LABEL
    return mask


def load_coco_item(item: CocoItem, with_class_labels: bool
                   ) -> conversion.ExampleParts:
    """Reads one COCO image, rasterises its mask and encodes both.

    Raises:
      BadInputError: id not in the annotation files, missing or corrupt image,
        image size different from the annotation's.
    """
    if item.image_path is None:
        raise BadInputError(item.source, f"id {item.image_id!r} is not in the "
                            "annotation files")
    image_bytes, image_format, height, width = image_io.read_image(
        item.image_path)
    if (height, width) != (item.height, item.width):
        raise BadInputError(
            item.image_path, f"image is {height}x{width} (HxW) but {item.source} "
            f"says {item.height}x{item.width}")
    try:
        mask = semantic_mask(item.annotations, height, width)
    except Exception as e:  # pycocotools raises assorted types on bad input
        raise BadInputError(item.source, f"cannot rasterise the annotations of "
                            f"{item.image_id}: {e}") from None
    labels = (image_io.present_classes(mask, CROWD_LABEL)
              if with_class_labels else None)
    return conversion.ExampleParts(
        image_id=item.image_id, image_bytes=image_bytes,
        image_format=image_format, height=height, width=width,
        mask_png=image_io.encode_png(mask), class_labels=labels)


def category_classes(coco: COCO, source: str) -> Dict[int, int]:
    """{category id: class index} = 1 + rank among the sorted category ids."""
    category_ids = sorted(coco.getCatIds())
    if not category_ids:
        raise ValueError(f"{source} has no categories")
    if len(category_ids) != len(dataset_info.COCO_CATEGORY_NAMES):
        logging.warning("%s has %d categories, not the 80 of COCO 2017: masks "
                        "will have %d classes while dataset 'coco' expects 81",
                        source, len(category_ids), len(category_ids) + 1)
    return {cat: rank + 1 for rank, cat in enumerate(category_ids)}


def index_split(coco_root: str, split: str) -> Dict[str, CocoItem]:
    """Loads ``instances_{split}2017.json``: {id: CocoItem}, in image-id order."""
    source = os.path.join(coco_root, "annotations", f"instances_{split}2017.json")
    if not os.path.isfile(source):
        raise FileNotFoundError(f"annotation file {source} not found")
    coco = COCO(source)
    classes = category_classes(coco, source)
    image_dir = os.path.join(coco_root, f"{split}2017")
    items = {}
    for coco_id in sorted(coco.getImgIds()):
        image = coco.imgs[coco_id]
        annotations = []
        for ann in coco.imgToAnns.get(coco_id, []):  # annotation-list order
            if ann["category_id"] not in classes:
                raise ValueError(f"{source}: annotation {ann.get('id')} has unknown "
                                 f"category_id {ann['category_id']}")
            annotations.append((classes[ann["category_id"]], ann["segmentation"],
                                bool(ann.get("iscrowd", 0))))
        image_id = os.path.splitext(image["file_name"])[0]
        items[image_id] = CocoItem(
            image_id=image_id,
            image_path=os.path.join(image_dir, image["file_name"]),
            height=int(image["height"]), width=int(image["width"]),
            annotations=tuple(annotations), source=source)
    return items


def convert_coco(coco_root: str,
                 output_dir: str,
                 splits: Sequence[str] = STANDARD_SPLITS,
                 split_lists: Optional[Dict[str, str]] = None,
                 num_shards: int = 32,
                 skip_bad: bool = False,
                 num_workers: int = 1,
                 progress_every: int = 500,
                 class_labels: bool = False
                 ) -> Dict[str, conversion.SplitResult]:
    """Converts the requested COCO splits; see the module docstring.

    Split lists need the annotation file of the split their ids come from, so
    ``splits`` decides which annotation files are loaded (default both).
    """
    for split in splits:
        if split not in STANDARD_SPLITS:
            raise ValueError(f"--splits: unknown split {split!r}; choose from "
                             f"{', '.join(STANDARD_SPLITS)}")
    if not os.path.isdir(coco_root):
        raise FileNotFoundError(f"--coco_root {coco_root} is not a directory")
    indexes = {split: index_split(coco_root, split) for split in splits}
    everything: Dict[str, CocoItem] = {}
    for index in indexes.values():
        everything.update(index)
    split_items: Dict[str, List[CocoItem]] = {
        split: list(index.values()) for split, index in indexes.items()}
    loaded = ", ".join(f"instances_{s}2017.json" for s in splits)
    for name, path in (split_lists or {}).items():
        split_items[name] = [
            everything.get(image_id) or CocoItem(
                image_id, None, 0, 0, (), f"{path} (ids looked up in {loaded})")
            for image_id in conversion.read_id_list(path)]
    load_fn = functools.partial(load_coco_item, with_class_labels=class_labels)
    return {
        split: conversion.convert_split(
            output_dir, split, items, load_fn, num_shards=num_shards,
            skip_bad=skip_bad, num_workers=num_workers,
            progress_every=progress_every)
        for split, items in split_items.items()}


FLAGS = flags.FLAGS


def _define_flags() -> None:
    flags.DEFINE_string("coco_root", None,
                        "COCO 2017 root holding annotations/, train2017/, "
                        "val2017/.")
    flags.DEFINE_list("splits", list(STANDARD_SPLITS),
                      "Standard splits to write (train, val); their annotation "
                      "files are also where --split_list ids are looked up.")
    conversion.define_common_flags(default_num_shards=32)
    flags.adopt_module_key_flags(conversion)  # shown by --help
    flags.mark_flags_as_required(["coco_root", "output_dir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")

    def convert():
        return convert_coco(
            coco_root=FLAGS.coco_root,
            output_dir=FLAGS.output_dir,
            splits=FLAGS.splits,
            **conversion.common_flag_values(),
            class_labels=FLAGS.class_labels)

    conversion.run_converter(convert)


if __name__ == "__main__":
    _define_flags()
    app.run(main)
