"""Converts a folder of images (+ single-channel index masks) to TFRecords.

For any dataset laid out as ``{image_dir}/<stem>.jpg|.jpeg|.png`` and
``{label_dir}/<stem>.png`` (mask values are class indices, kept raw; the void
value stays as is), e.g. CamVid::

    python datasets/build_folder.py \\
        --image_dir=data/sources/camvid/images/train \\
        --label_dir=data/sources/camvid/labels/train \\
        --list_file=data/sources/camvid/train.txt \\
        --split_name=train --output_dir=data/camvid_records \\
        --dataset_name=camvid --num_classes=11 --ignore_label=11 \\
        --class_names=Sky,Building,Pole,Road,Pavement,Tree,SignSymbol,Fence,Car,Pedestrian,Bicyclist

(``data/sources/camvid`` is what ``python -m datasets.download camvid
--root=data`` writes; it also converts it, into ``data/camvid``.)
Without ``--label_dir`` the records have no mask (a truly unlabeled set).
Without ``--list_file`` every image in ``--image_dir`` is converted (sorted).
Also writes ``{output_dir}/dataset_info.json`` (name, num_classes,
ignore_label, class_names), which ``dataset_info.get_dataset_info`` reads.
"""

if __package__ in (None, ""):
    import os, sys  # pylint: disable=g-multiple-import
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import functools
import json
import os
from typing import Dict, List, Optional, Sequence

from absl import app
from absl import flags

from datasets import conversion
from datasets import dataset_info
from datasets import image_io

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")


def load_folder_item(image_id: str, image_dir: str, label_dir: Optional[str],
                     num_classes: int, ignore_label: int,
                     with_class_labels: bool) -> conversion.ExampleParts:
    """Finds, reads, validates and encodes one image and (optional) mask.

    Raises:
      BadInputError: missing image or mask, corrupt file, size mismatch, label
        values that are neither a class nor the ignore label.
    """
    image_path = image_io.find_file(image_dir, image_id, IMAGE_EXTENSIONS)
    image_bytes, image_format, height, width = image_io.read_image(image_path)
    mask_png = labels = None
    if label_dir is not None:
        mask_path = image_io.find_file(label_dir, image_id, (".png",))
        mask = image_io.read_mask(mask_path)
        mask_png, labels = image_io.mask_png_and_labels(
            mask_path, mask, height, width, num_classes, ignore_label,
            with_class_labels)
    return conversion.ExampleParts(
        image_id=image_id, image_bytes=image_bytes, image_format=image_format,
        height=height, width=width, mask_png=mask_png, class_labels=labels)


def list_image_ids(image_dir: str) -> List[str]:
    """Stems of the images in ``image_dir``, sorted."""
    if not os.path.isdir(image_dir):
        raise FileNotFoundError(f"--image_dir {image_dir} is not a directory")
    ids = sorted({os.path.splitext(name)[0] for name in os.listdir(image_dir)
                  if name.endswith(IMAGE_EXTENSIONS)})
    if not ids:
        raise ValueError(f"--image_dir {image_dir} contains no .jpg/.png images")
    return ids


def read_class_names(value: Optional[Sequence[str]],
                     num_classes: int) -> Optional[List[str]]:
    """Class names from a list, or from a file (json list or one per line)."""
    if not value:
        return None
    if len(value) == 1 and os.path.isfile(value[0]):
        path = value[0]
        with open(path) as f:
            text = f.read()
        try:
            names = json.loads(text)
        except json.JSONDecodeError:
            names = [line.strip() for line in text.splitlines() if line.strip()]
        if not isinstance(names, list) or not all(isinstance(n, str)
                                                  for n in names):
            raise ValueError(f"--class_names file {path}: expected a json list of "
                             "strings or one name per line")
    else:
        names = list(value)
    if len(names) != num_classes:
        raise ValueError(f"--class_names has {len(names)} names for "
                         f"--num_classes={num_classes}")
    return names


def convert_folder(image_dir: str,
                   output_dir: str,
                   split_name: str,
                   num_classes: int,
                   ignore_label: int = 255,
                   label_dir: Optional[str] = None,
                   list_file: Optional[str] = None,
                   dataset_name: str = "folder",
                   class_names: Optional[Sequence[str]] = None,
                   split_lists: Optional[Dict[str, str]] = None,
                   num_shards: int = 4,
                   skip_bad: bool = False,
                   num_workers: int = 1,
                   progress_every: int = 500,
                   class_labels: bool = False
                   ) -> Dict[str, conversion.SplitResult]:
    """Converts a folder dataset; see the module docstring.

    Returns:
      {split: SplitResult} for ``split_name`` and every split list.
    """
    info = dataset_info.folder_dataset_info(
        dataset_name, num_classes, ignore_label, class_names)
    if class_labels and label_dir is None:
        raise ValueError("--class_labels needs --label_dir (labels are derived "
                         "from the masks)")
    if label_dir is not None and not os.path.isdir(label_dir):
        raise FileNotFoundError(f"--label_dir {label_dir} is not a directory")
    id_lists = {split_name: (conversion.read_id_list(list_file) if list_file
                             else list_image_ids(image_dir))}
    for name, path in (split_lists or {}).items():
        if name in id_lists:
            raise ValueError(f"--split_list {name} repeats --split_name")
        id_lists[name] = conversion.read_id_list(path)
    os.makedirs(output_dir, exist_ok=True)
    dataset_info.write_dataset_info_json(info, output_dir)
    load_fn = functools.partial(
        load_folder_item, image_dir=image_dir, label_dir=label_dir,
        num_classes=num_classes, ignore_label=ignore_label,
        with_class_labels=class_labels)
    return {
        split: conversion.convert_split(
            output_dir, split, ids, load_fn, num_shards=num_shards,
            skip_bad=skip_bad, num_workers=num_workers,
            progress_every=progress_every)
        for split, ids in id_lists.items()}


FLAGS = flags.FLAGS


def _define_flags() -> None:
    flags.DEFINE_string("image_dir", None, "Directory of <stem>.jpg/.png images.")
    flags.DEFINE_string("label_dir", None,
                        "Directory of <stem>.png single-channel index masks; "
                        "omit for an unlabeled set.")
    flags.DEFINE_string("list_file", None,
                        "Ids to convert, one per line (default: every image).")
    flags.DEFINE_string("split_name", None, "Name of the split to write.")
    flags.DEFINE_string("dataset_name", "folder",
                        "Name stored in dataset_info.json.")
    flags.DEFINE_integer("num_classes", None,
                         "Number of classes C (mask values 0..C-1).")
    flags.DEFINE_integer("ignore_label", 255,
                         "Mask value of ignored (void) pixels, kept as is.")
    flags.DEFINE_list("class_names", None,
                      "Comma-separated class names in index order, or the path "
                      "of a file (json list or one name per line); default "
                      "class_0..class_{C-1}.")
    conversion.define_common_flags(default_num_shards=4)
    flags.adopt_module_key_flags(conversion)  # shown by --help
    flags.mark_flags_as_required(
        ["image_dir", "split_name", "output_dir", "num_classes"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")

    def convert():
        return convert_folder(
            image_dir=FLAGS.image_dir,
            output_dir=FLAGS.output_dir,
            split_name=FLAGS.split_name,
            num_classes=FLAGS.num_classes,
            ignore_label=FLAGS.ignore_label,
            label_dir=FLAGS.label_dir,
            list_file=FLAGS.list_file,
            dataset_name=FLAGS.dataset_name,
            class_names=read_class_names(FLAGS.class_names, FLAGS.num_classes),
            **conversion.common_flag_values(),
            class_labels=FLAGS.class_labels)

    conversion.run_converter(convert)


if __name__ == "__main__":
    _define_flags()
    app.run(main)
