"""Dataset descriptors: classes, ignore label, names, colour map, split sizes.

One place knows, per dataset, what the rest of the project needs about it:

* ``pascal_voc_seg``: PASCAL VOC 2012 (+ SBD), 21 classes, ignore label 255.
* ``coco``: COCO 2017 as 81-class semantic masks (see ``build_coco.py``),
  ignore label 255.
* ``msrc``: MSRC-v2 as a VOC-like object dataset, 16 classes, ignore label
  255 (``python -m datasets.download msrc --root=data`` writes the images and
  masks to ``data/sources/msrc`` and their records, by ``build_folder.py``,
  to ``data/msrc``); its split sizes include test (256) and the
  labeled/unlabeled lists of the MSRC study (``benchmarks/studies/msrc.json``).
* folder datasets (e.g. CamVid): described by the ``dataset_info.json`` that
  ``build_folder.py`` writes next to the records; ``get_dataset_info("folder",
  dataset_dir)`` (or any unregistered name whose directory holds that file)
  reads it.
* ``tfds:NAME``: a TensorFlow Datasets dataset with an image and a
  segmentation-mask feature; the number of classes and the ignore label are not
  knowable from TFDS features and must be given.

Class 0 is treated as "background" by PseudoSeg's class-presence vectors, which
have ``num_classes - 1`` entries for classes ``1 .. num_classes-1``. This holds
for every dataset, including ones such as CamVid where class 0 is a real class
(Sky): its presence is then simply not part of the classification target.
"""

import dataclasses
import json
import os
import types
from typing import Mapping, Optional, Sequence, Tuple

DATASET_INFO_FILENAME = "dataset_info.json"
TFDS_PREFIX = "tfds:"

VOC_CLASS_NAMES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus",
    "car", "cat", "chair", "cow", "diningtable", "dog", "horse", "motorbike",
    "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")

# COCO 2017 "things" categories in ascending category-id order; class index
# = 1 + position in this list (background is 0), see build_coco.py.
COCO_CATEGORY_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train",
    "truck", "boat", "traffic light", "fire hydrant", "stop sign",
    "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag",
    "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon",
    "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot",
    "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
    "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush")

VOC_SPLIT_SIZES = {
    "train": 1464,
    "val": 1449,
    "train_aug": 10582,
    "16_clean_3": 92,
    "8_clean": 183,
    "4_clean": 366,
    "2_clean": 732,
}

COCO_SPLIT_SIZES = {
    "train": 118287,
    "val": 5000,
    "32_all": 3697,
    "64_all": 1849,
    "128_all": 925,
    "256_all": 463,
    "512_all": 232,
}


MSRC_CLASS_NAMES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "body", "book", "car",
    "cat", "chair", "cow", "dog", "face", "flower", "sheep", "sign")

# MSRC-v2 train (276) and val (59); the study draws 1/4 (69) and 1/8 (34) of
# train as pixel-labeled, the rest unlabeled, each with seeds 0, 1, 2
# (``msrc_split_names``).
MSRC_NUM_TRAIN = 276
MSRC_LABELED = {4: 69, 8: 34}
MSRC_SEEDS = (0, 1, 2)


def msrc_split_names(denominator: int, seed: int) -> Tuple[str, str]:
    """Names of the study's labeled and unlabeled splits of MSRC train at 1/N,
    e.g. ``("labeled_1_4_seed0", "unlabeled_1_4_seed0")``."""
    return (f"labeled_1_{denominator}_seed{seed}",
            f"unlabeled_1_{denominator}_seed{seed}")


def _msrc_split_sizes():
    sizes = {"train": MSRC_NUM_TRAIN, "val": 59, "test": 256}
    for denominator, labeled in MSRC_LABELED.items():
        for seed in MSRC_SEEDS:
            labeled_name, unlabeled_name = msrc_split_names(denominator, seed)
            sizes[labeled_name] = labeled
            sizes[unlabeled_name] = MSRC_NUM_TRAIN - labeled
    return sizes


def generated_colormap(size: int = 256) -> Tuple[Tuple[int, int, int], ...]:
    """Returns ``size`` RGB colours made by the PASCAL VOC bit-interleaving rule.

    Entry ``i`` spreads the bits of ``i`` over the high bits of R, G and B. For
    ``size=256`` this is exactly the palette of VOC's SegmentationClass PNGs
    (index 255, the void border, is (224, 224, 192)).
    """
    colours = []
    for index in range(size):
        r = g = b = 0
        value = index
        for shift in range(7, -1, -1):
            r |= ((value >> 0) & 1) << shift
            g |= ((value >> 1) & 1) << shift
            b |= ((value >> 2) & 1) << shift
            value >>= 3
        colours.append((r, g, b))
    return tuple(colours)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What the pipelines and the trainer need to know about one dataset.

    Attributes:
      name: registry name (``pascal_voc_seg``, ``coco``, ``tfds:NAME`` or the
        folder dataset's own name).
      num_classes: number of classes C including class 0 ("background").
      ignore_label: raw mask value that marks pixels to ignore.
      class_names: C names, index = class value.
      colormap: 256 RGB triples, index = raw mask value (covers the ignore label).
      split_sizes: known number of images per split (the reader warns when a
        split's record count differs).
      eval_crop_size: (height, width) the evaluation pads to, or None for whole
        images.
      tfds_name: the TFDS dataset name for ``tfds:NAME`` datasets, else None.
      tfds_image_key, tfds_mask_key: feature names read from TFDS examples.
    """
    name: str
    num_classes: int
    ignore_label: int
    class_names: Tuple[str, ...]
    colormap: Tuple[Tuple[int, int, int], ...] = dataclasses.field(
        default_factory=generated_colormap, repr=False)
    split_sizes: Mapping[str, int] = dataclasses.field(
        default_factory=lambda: types.MappingProxyType({}))
    eval_crop_size: Optional[Tuple[int, int]] = None
    tfds_name: Optional[str] = None
    tfds_image_key: str = "image"
    tfds_mask_key: str = "segmentation_mask"

    def __post_init__(self):
        if self.num_classes < 2:
            raise ValueError(
                f"dataset {self.name!r}: num_classes must be >= 2, got "
                f"{self.num_classes}")
        if len(self.class_names) != self.num_classes:
            raise ValueError(
                f"dataset {self.name!r}: {len(self.class_names)} class names for "
                f"{self.num_classes} classes")
        if not 0 <= self.ignore_label <= 255:
            raise ValueError(
                f"dataset {self.name!r}: ignore_label must be in 0..255 (masks are "
                f"8-bit PNGs), got {self.ignore_label}")
        if self.ignore_label < self.num_classes:
            raise ValueError(
                f"dataset {self.name!r}: ignore_label {self.ignore_label} collides "
                f"with class {self.ignore_label} of {self.num_classes} classes")
        if self.num_classes > 255:
            raise ValueError(
                f"dataset {self.name!r}: at most 255 classes fit 8-bit masks, got "
                f"{self.num_classes}")
        object.__setattr__(self, "class_names", tuple(self.class_names))
        object.__setattr__(self, "split_sizes",
                           types.MappingProxyType(dict(self.split_sizes)))

    @property
    def is_tfds(self) -> bool:
        """True when examples come from TensorFlow Datasets instead of records."""
        return self.tfds_name is not None


PASCAL_VOC_SEG = DatasetInfo(
    name="pascal_voc_seg",
    num_classes=21,
    ignore_label=255,
    class_names=VOC_CLASS_NAMES,
    split_sizes=VOC_SPLIT_SIZES,
    eval_crop_size=(513, 513),
)

COCO = DatasetInfo(
    name="coco",
    num_classes=81,
    ignore_label=255,
    class_names=("background",) + COCO_CATEGORY_NAMES,
    split_sizes=COCO_SPLIT_SIZES,
    eval_crop_size=(641, 641),
)

# Images are 320x213 (most), 320x240 and portrait versions: 321x321 pads
# every one (the smallest size that is a multiple of 16 plus one).
MSRC = DatasetInfo(
    name="msrc",
    num_classes=16,
    ignore_label=255,
    class_names=MSRC_CLASS_NAMES,
    split_sizes=_msrc_split_sizes(),
    eval_crop_size=(321, 321),
)

_REGISTRY = {info.name: info for info in (PASCAL_VOC_SEG, COCO, MSRC)}


def registered_names() -> Tuple[str, ...]:
    """Names ``get_dataset_info`` knows without a ``dataset_info.json``."""
    return tuple(sorted(_REGISTRY))


def default_class_names(num_classes: int) -> Tuple[str, ...]:
    """Placeholder names ``class_0 .. class_{C-1}`` for unnamed classes."""
    return tuple(f"class_{i}" for i in range(num_classes))


def folder_dataset_info(name: str,
                        num_classes: int,
                        ignore_label: int,
                        class_names: Optional[Sequence[str]] = None,
                        split_sizes: Optional[Mapping[str, int]] = None,
                        eval_crop_size: Optional[Tuple[int, int]] = None
                        ) -> DatasetInfo:
    """Builds the descriptor of a user dataset from explicit arguments."""
    if class_names is None:
        class_names = default_class_names(num_classes)
    return DatasetInfo(
        name=name,
        num_classes=num_classes,
        ignore_label=ignore_label,
        class_names=tuple(class_names),
        split_sizes=split_sizes or {},
        eval_crop_size=eval_crop_size)


def write_dataset_info_json(info: DatasetInfo, output_dir: str) -> str:
    """Writes ``{output_dir}/dataset_info.json`` describing ``info``.

    If the file already exists with a different name, class count, ignore label
    or class names, raises ValueError naming the file instead of overwriting a
    description other splits in that directory rely on.

    Returns:
      The path of the json file.
    """
    path = os.path.join(output_dir, DATASET_INFO_FILENAME)
    content = {
        "name": info.name,
        "num_classes": info.num_classes,
        "ignore_label": info.ignore_label,
        "class_names": list(info.class_names),
    }
    if os.path.exists(path):
        with open(path) as f:
            existing = json.load(f)
        if existing != content:
            raise ValueError(
                f"{path} already describes a different dataset ({existing}); "
                f"refusing to overwrite it with {content}. Use another --output_dir "
                "or delete the file.")
        return path
    tmp_path = path + f".tmp-{os.getpid()}"
    with open(tmp_path, "w") as f:
        json.dump(content, f, indent=2)
        f.write("\n")
    os.replace(tmp_path, path)
    return path


def read_dataset_info_json(dataset_dir: str) -> DatasetInfo:
    """Reads the ``dataset_info.json`` that build_folder wrote in dataset_dir."""
    path = os.path.join(dataset_dir, DATASET_INFO_FILENAME)
    try:
        with open(path) as f:
            content = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path} not found: folder datasets are described by the "
            "dataset_info.json that datasets/build_folder.py writes") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid json: {e}") from None
    missing = {"num_classes", "ignore_label"} - set(content)
    if missing:
        raise ValueError(f"{path} lacks the keys {sorted(missing)}")
    return folder_dataset_info(
        name=content.get("name", "folder"),
        num_classes=int(content["num_classes"]),
        ignore_label=int(content["ignore_label"]),
        class_names=content.get("class_names"))


def _check_registered_json(info: DatasetInfo, dataset_dir: str) -> None:
    """Refuses records whose ``dataset_info.json`` (from build_folder.py) names
    the registered dataset but describes different classes."""
    path = os.path.join(dataset_dir, DATASET_INFO_FILENAME)
    if not os.path.exists(path):
        return
    written = read_dataset_info_json(dataset_dir)
    if written.name != info.name:
        return
    for field in ("num_classes", "ignore_label", "class_names"):
        if getattr(written, field) != getattr(info, field):
            raise ValueError(
                f"{path} describes dataset {info.name!r} with {field}="
                f"{getattr(written, field)!r}, but the registered descriptor has "
                f"{getattr(info, field)!r}; convert with the registered settings")


def get_dataset_info(name: str,
                     dataset_dir: Optional[str] = None,
                     *,
                     num_classes: Optional[int] = None,
                     ignore_label: Optional[int] = None,
                     class_names: Optional[Sequence[str]] = None,
                     tfds_image_key: str = "image",
                     tfds_mask_key: str = "segmentation_mask") -> DatasetInfo:
    """Returns the descriptor of dataset ``name``.

    Args:
      name: ``pascal_voc_seg``, ``coco``, ``folder`` (or any other name whose
        ``dataset_dir`` holds a ``dataset_info.json``), or ``tfds:NAME``.
      dataset_dir: directory of the records; needed for folder datasets.
      num_classes, ignore_label, class_names: required for ``tfds:NAME``
        (class_names optional); not accepted otherwise, since registered and
        folder datasets carry their own.
      tfds_image_key, tfds_mask_key: TFDS feature names of the image and mask.

    Raises:
      ValueError: unknown name, or missing/extra arguments.
    """
    overrides = {"num_classes": num_classes, "ignore_label": ignore_label,
                 "class_names": class_names}
    given = sorted(k for k, v in overrides.items() if v is not None)
    if name.startswith(TFDS_PREFIX):
        tfds_name = name[len(TFDS_PREFIX):]
        if not tfds_name:
            raise ValueError(f"dataset {name!r}: expected tfds:NAME")
        if num_classes is None or ignore_label is None:
            raise ValueError(
                f"dataset {name!r}: TFDS features do not say how many classes the "
                "masks have; pass num_classes and ignore_label (flags "
                "--num_classes and --ignore_label)")
        return DatasetInfo(
            name=name,
            num_classes=num_classes,
            ignore_label=ignore_label,
            class_names=tuple(class_names or default_class_names(num_classes)),
            tfds_name=tfds_name,
            tfds_image_key=tfds_image_key,
            tfds_mask_key=tfds_mask_key)
    if given:
        raise ValueError(
            f"dataset {name!r}: {given} can only be given for tfds:NAME datasets; "
            "registered datasets and folder datasets (dataset_info.json) define "
            "their own")
    if name in _REGISTRY:
        info = _REGISTRY[name]
        if dataset_dir is not None:
            _check_registered_json(info, dataset_dir)
        return info
    if dataset_dir is not None and os.path.exists(
        os.path.join(dataset_dir, DATASET_INFO_FILENAME)):
        return read_dataset_info_json(dataset_dir)
    where = (f"{dataset_dir!r} has no {DATASET_INFO_FILENAME}"
             if dataset_dir else "no dataset_dir given")
    raise ValueError(
        f"unknown dataset {name!r} ({where}); known: "
        f"{', '.join(registered_names())}, tfds:NAME, or a directory written by "
        "datasets/build_folder.py")
