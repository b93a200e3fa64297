"""Converts PASCAL VOC 2012 (+ SBD) to sharded TFRecords.

    python datasets/build_voc.py \\
        --voc_root=.../VOCdevkit/VOC2012 \\
        --sbd_root=.../benchmark_RELEASE/dataset \\
        --output_dir=data/voc_records \\
        --split_list=16_clean_3=splits/16_clean_3.txt

Splits written (``--splits``):

* ``train``: VOC ``ImageSets/Segmentation/train.txt`` (1464 on the real data);
* ``val``: VOC ``ImageSets/Segmentation/val.txt`` (1449);
* ``train_aug``: (SBD train ∪ SBD val ∪ VOC train) − VOC val (10582);
  needs ``--sbd_root``;
* every ``--split_list NAME=FILE``.

Images come from VOC ``JPEGImages/<id>.jpg`` (SBD ``img/<id>.jpg`` when VOC
lacks the id) and are stored byte-for-byte. Masks come from VOC's palette PNGs
``SegmentationClass/<id>.png`` (the palette index is the class; 255, the void
border, stays 255) where they exist, else from SBD's ``cls/<id>.mat``
(``GTcls.Segmentation``). Values are never remapped. With ``--class_labels``
the image-level labels are written too, from the masks or, with
``--class_labels_source=annotations``, from the object names of VOC's
``Annotations/<id>.xml``.
"""

if __package__ in (None, ""):
    import os, sys  # pylint: disable=g-multiple-import
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import functools
import os
import xml.etree.ElementTree as ElementTree
from typing import Dict, List, NamedTuple, Optional, Sequence

from absl import app
from absl import flags
import numpy as np
import scipy.io

from datasets import conversion
from datasets import dataset_info
from datasets import image_io
from datasets.image_io import BadInputError

STANDARD_SPLITS = ("train", "val", "train_aug")


class VocItem(NamedTuple):
    """Where one image's files are."""
    image_id: str
    image_path: str
    mask_path: str  # .png (VOC) or .mat (SBD)
    xml_path: Optional[str]


def read_sbd_mat(path: str) -> np.ndarray:
    """Reads ``GTcls.Segmentation`` from an SBD ``cls/<id>.mat`` as uint8.

    Raises:
      BadInputError: unreadable file or no ``GTcls.Segmentation`` field.
    """
    try:
        mat = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)
    except FileNotFoundError:
        raise BadInputError(path, "SBD mask file not found") from None
    except Exception as e:  # scipy raises assorted types for corrupt files
        raise BadInputError(path, f"cannot read .mat file: {e}") from None
    gtcls = mat.get("GTcls")
    segmentation = getattr(gtcls, "Segmentation", None)
    if segmentation is None:
        raise BadInputError(path, "no GTcls.Segmentation field")
    array = np.asarray(segmentation)
    if array.ndim != 2:
        raise BadInputError(
            path, f"GTcls.Segmentation has shape {array.shape}, expected HxW")
    if array.size and (array.min() < 0 or array.max() > 255):
        raise BadInputError(
            path, f"GTcls.Segmentation values {array.min()}..{array.max()} do not "
            "fit 8 bits")
    return array.astype(np.uint8)


def read_annotation_labels(path: str) -> List[int]:
    """Image-level class ids from the object names of a VOC annotation XML.

    Raises:
      BadInputError: missing/corrupt file or an unknown object name.
    """
    try:
        root = ElementTree.parse(path).getroot()
    except FileNotFoundError:
        raise BadInputError(path, "annotation file not found") from None
    except ElementTree.ParseError as e:
        raise BadInputError(path, f"corrupt annotation XML: {e}") from None
    labels = set()
    for obj in root.findall("object"):
        class_name = (obj.findtext("name") or "").strip()
        if class_name not in dataset_info.VOC_CLASS_NAMES[1:]:
            raise BadInputError(path, f"unknown object class {class_name!r}")
        labels.add(dataset_info.VOC_CLASS_NAMES.index(class_name))
    return sorted(labels)


def load_voc_item(image_id: str, layout: "VocLayout",
                  class_labels: Optional[str]) -> conversion.ExampleParts:
    """Finds, reads, validates and encodes one VOC/SBD image and its mask.

    Args:
      image_id: the image id.
      layout: resolves the id to files.
      class_labels: None (no image-level labels), "mask" or "annotations".

    Raises:
      BadInputError: missing files, corrupt image or mask, size mismatch,
        invalid label values, bad annotation XML.
    """
    info = dataset_info.PASCAL_VOC_SEG
    item = layout.item(image_id)
    image_bytes, image_format, height, width = image_io.read_image(
        item.image_path)
    if item.mask_path.endswith(".mat"):
        mask = read_sbd_mat(item.mask_path)
    else:
        mask = image_io.read_mask(item.mask_path)
    mask_png, labels = image_io.mask_png_and_labels(
        item.mask_path, mask, height, width, info.num_classes,
        info.ignore_label, with_class_labels=class_labels == "mask")
    if class_labels == "annotations":
        labels = read_annotation_labels(item.xml_path)
    return conversion.ExampleParts(
        image_id=item.image_id, image_bytes=image_bytes,
        image_format=image_format, height=height, width=width,
        mask_png=mask_png, class_labels=labels)


def _read_plain_list(path: str) -> List[str]:
    """Ids of a VOC/SBD ImageSets-style list."""
    return conversion.read_id_list(path)


class VocLayout:
    """Resolves ids to files in a VOC 2012 root and an optional SBD root."""

    def __init__(self, voc_root: str, sbd_root: Optional[str]):
        if not os.path.isdir(voc_root):
            raise FileNotFoundError(f"--voc_root {voc_root} is not a directory")
        if sbd_root is not None and not os.path.isdir(sbd_root):
            raise FileNotFoundError(f"--sbd_root {sbd_root} is not a directory")
        self.voc_root = voc_root
        self.sbd_root = sbd_root

    def voc_list(self, name: str) -> List[str]:
        """Ids of ``ImageSets/Segmentation/{name}.txt``."""
        return _read_plain_list(os.path.join(
            self.voc_root, "ImageSets", "Segmentation", f"{name}.txt"))

    def sbd_list(self, name: str) -> List[str]:
        """Ids of SBD's ``{name}.txt``."""
        return _read_plain_list(os.path.join(self.sbd_root, f"{name}.txt"))

    def train_aug_ids(self) -> List[str]:
        """(SBD train ∪ SBD val ∪ VOC train) − VOC val, sorted."""
        if self.sbd_root is None:
            raise ValueError("split train_aug needs --sbd_root")
        pool = (set(self.sbd_list("train")) | set(self.sbd_list("val"))
                | set(self.voc_list("train")))
        return sorted(pool - set(self.voc_list("val")))

    def item(self, image_id: str) -> VocItem:
        """Files of ``image_id``; BadInputError naming the paths when missing."""
        image_dirs = [os.path.join(self.voc_root, "JPEGImages")]
        mask_candidates = [os.path.join(self.voc_root, "SegmentationClass",
                                        image_id + ".png")]
        if self.sbd_root is not None:
            image_dirs.append(os.path.join(self.sbd_root, "img"))
            mask_candidates.append(os.path.join(self.sbd_root, "cls",
                                                image_id + ".mat"))
        image_path = None
        for directory in image_dirs:
            candidate = os.path.join(directory, image_id + ".jpg")
            if os.path.isfile(candidate):
                image_path = candidate
                break
        if image_path is None:
            tried = [os.path.join(d, image_id + ".jpg") for d in image_dirs]
            raise BadInputError(tried[0], f"no image for id {image_id!r} (looked "
                                f"for {', '.join(tried)})")
        mask_path = next((p for p in mask_candidates if os.path.isfile(p)), None)
        if mask_path is None:
            raise BadInputError(mask_candidates[0], f"no mask for id {image_id!r} "
                                f"(looked for {', '.join(mask_candidates)})")
        xml_path = os.path.join(self.voc_root, "Annotations", image_id + ".xml")
        return VocItem(image_id, image_path, mask_path, xml_path)


def convert_voc(voc_root: str,
                output_dir: str,
                sbd_root: Optional[str] = None,
                splits: Sequence[str] = STANDARD_SPLITS,
                split_lists: Optional[Dict[str, str]] = None,
                num_shards: int = 4,
                skip_bad: bool = False,
                num_workers: int = 1,
                progress_every: int = 500,
                class_labels: Optional[str] = None
                ) -> Dict[str, conversion.SplitResult]:
    """Converts the requested VOC splits; see the module docstring.

    Args:
      voc_root: ``VOCdevkit/VOC2012``.
      output_dir: directory of the records.
      sbd_root: ``benchmark_RELEASE/dataset`` (needed for ``train_aug`` and for
        ids without a VOC mask).
      splits: subset of ``train``, ``val``, ``train_aug``.
      split_lists: {split name: id list file}.
      num_shards, skip_bad, num_workers, progress_every: see ``convert_split``.
      class_labels: None, "mask" or "annotations" (image/class_labels source).

    Returns:
      {split: SplitResult}.
    """
    for split in splits:
        if split not in STANDARD_SPLITS:
            raise ValueError(f"--splits: unknown split {split!r}; choose from "
                             f"{', '.join(STANDARD_SPLITS)}")
    if class_labels not in (None, "mask", "annotations"):
        raise ValueError(f"class_labels must be None, 'mask' or 'annotations', "
                         f"got {class_labels!r}")
    layout = VocLayout(voc_root, sbd_root)
    id_lists = {}
    for split in splits:
        id_lists[split] = (layout.train_aug_ids() if split == "train_aug"
                           else layout.voc_list(split))
    for name, path in (split_lists or {}).items():
        id_lists[name] = conversion.read_id_list(path)
    load_fn = functools.partial(load_voc_item, layout=layout,
                                class_labels=class_labels)
    results = {}
    for split, ids in id_lists.items():
        results[split] = conversion.convert_split(
            output_dir, split, ids, load_fn, num_shards=num_shards,
            skip_bad=skip_bad, num_workers=num_workers,
            progress_every=progress_every)
    return results


FLAGS = flags.FLAGS


def _define_flags() -> None:
    flags.DEFINE_string("voc_root", None, "VOCdevkit/VOC2012 directory.")
    flags.DEFINE_string("sbd_root", None,
                        "SBD benchmark_RELEASE/dataset directory (img/, cls/, "
                        "train.txt, val.txt); needed for train_aug.")
    flags.DEFINE_list("splits", list(STANDARD_SPLITS),
                      "Standard splits to write: train, val, train_aug.")
    flags.DEFINE_enum("class_labels_source", "mask", ["mask", "annotations"],
                      "With --class_labels: derive image-level labels from the "
                      "masks or from the object names in Annotations/<id>.xml.")
    conversion.define_common_flags(default_num_shards=4)
    flags.adopt_module_key_flags(conversion)  # shown by --help
    flags.mark_flags_as_required(["voc_root", "output_dir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")

    def convert():
        return convert_voc(
            voc_root=FLAGS.voc_root,
            output_dir=FLAGS.output_dir,
            sbd_root=FLAGS.sbd_root,
            splits=FLAGS.splits,
            **conversion.common_flag_values(),
            class_labels=FLAGS.class_labels_source if FLAGS.class_labels else None)

    conversion.run_converter(convert)


if __name__ == "__main__":
    _define_flags()
    app.run(main)
