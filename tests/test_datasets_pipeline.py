"""Input pipelines: geometry, weak/strong views, masks, labels, determinism.

The images are lossless PNGs whose pixels encode their own coordinates
(R = 8 * row, G = 8 * column, B = 10 * image index + 5), so every output pixel
tells where it came from and NumPy can check crop, flip, padding, labels and
valid masks independently of the pipeline.
"""

import os

import numpy as np
import pytest
import tensorflow as tf

from datasets import augment
from datasets import build_folder
from datasets import conversion
from datasets import dataset_info
from datasets import image_io
from datasets import input_pipeline
from datasets import records
from datasets import fake_sources

H, W = 20, 30
NUM_CLASSES, IGNORE = 5, 5
NUM_IMAGES = 8
NO_JITTER = dict(brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0)
FIXED_SCALE = dict(min_scale_factor=1.0, max_scale_factor=1.0)


def coordinate_image(index):
    rows, cols = np.mgrid[0:H, 0:W]
    return np.stack([8 * rows, 8 * cols, np.full_like(rows, 10 * index + 5)],
                    axis=-1).astype(np.uint8)


@pytest.fixture(scope="module")
def coord_data(tmp_path_factory):
    """Records of 8 coordinate images with random masks; returns (dir, masks)."""
    root = tmp_path_factory.mktemp("coord")
    rng = np.random.default_rng(0)
    masks = {}
    for index in range(NUM_IMAGES):
        stem = f"im{index}"
        fake_sources.save_png(str(root / "images" / f"{stem}.png"),
                              coordinate_image(index))
        mask = fake_sources.random_mask(rng, H, W, range(NUM_CLASSES))
        mask[0, :5] = IGNORE
        fake_sources.save_png(str(root / "labels" / f"{stem}.png"), mask)
        masks[index] = mask
    out = str(root / "records")
    build_folder.convert_folder(
        image_dir=str(root / "images"), label_dir=str(root / "labels"),
        output_dir=out, split_name="train", num_classes=NUM_CLASSES,
        ignore_label=IGNORE, num_shards=4)
    build_folder.convert_folder(
        image_dir=str(root / "images"), output_dir=out, split_name="nomask",
        num_classes=NUM_CLASSES, ignore_label=IGNORE, num_shards=2)
    return out, masks


def info_of(directory):
    return dataset_info.get_dataset_info("folder", directory)


def first_batches(dataset, n=1):
    return [{k: v.numpy() for k, v in b.items()} for b in dataset.take(n)]


def decode_coordinates(image, valid):
    """Source (index, row, col) of each valid pixel; -1 on padding."""
    rows = np.where(valid, image[..., 0] / 8, -1)
    cols = np.where(valid, image[..., 1] / 8, -1)
    index = np.where(valid, (image[..., 2] - 5) / 10, -1)
    for a in (rows, cols, index):
        np.testing.assert_array_equal(a, np.round(a))
    return index.astype(int), rows.astype(int), cols.astype(int)


def check_geometry(image, label, valid, masks, crop):
    """Checks one example's crop/flip/pad against the source; returns flipped."""
    valid = valid[..., 0] > 0
    label = label[..., 0]
    # Padding: mean pixel in the image, ignore label in the label.
    assert np.all(image[~valid] == 127.5)
    assert np.all(label[~valid] == IGNORE)
    index, rows, cols = decode_coordinates(image, valid)
    k = index[valid][0]
    assert np.all(index[valid] == k)
    # Height 20 < crop 24: rows 0..19 at the top, padding below.
    np.testing.assert_array_equal(
        valid, np.broadcast_to(np.arange(crop[0])[:, None] < H, crop))
    np.testing.assert_array_equal(rows[:H], np.repeat(np.arange(H)[:, None],
                                                      crop[1], axis=1))
    # Width 30 > crop 24: a contiguous window, maybe mirrored.
    first = cols[0]
    flipped = first[0] > first[-1]
    step = -1 if flipped else 1
    np.testing.assert_array_equal(first, first[0] + step * np.arange(crop[1]))
    assert 0 <= first.min() and first.max() < W
    assert np.all(cols[:H] == first[None, :])
    # The label moved with the image.
    np.testing.assert_array_equal(label[valid], masks[k][rows[valid],
                                                         cols[valid]])
    return flipped, k, int(first.min())


def numpy_presence(label):
    present = np.zeros(NUM_CLASSES - 1, np.float32)
    for v in np.unique(label):
        if 1 <= v < NUM_CLASSES:
            present[v - 1] = 1
    return present


def test_labeled_batches_geometry_and_class_presence(coord_data):
    directory, masks = coord_data
    crop = (24, 24)
    batch = first_batches(input_pipeline.labeled_dataset(
        info_of(directory), directory, "train", crop, 16, seed=1,
        **FIXED_SCALE))[0]
    assert batch["image"].shape == (16, 24, 24, 3)
    assert batch["image"].dtype == np.float32
    assert batch["label"].shape == (16, 24, 24, 1)
    assert batch["label"].dtype == np.int32
    assert batch["valid_mask"].shape == (16, 24, 24, 1)
    assert batch["class_presence"].shape == (16, NUM_CLASSES - 1)
    seen = set()
    for i in range(16):
        flipped, k, offset = check_geometry(
            batch["image"][i], batch["label"][i], batch["valid_mask"][i], masks,
            crop)
        seen.add((flipped, offset))
        np.testing.assert_array_equal(batch["class_presence"][i],
                                      numpy_presence(batch["label"][i]))
    assert {f for f, _ in seen} == {True, False}
    assert len({o for _, o in seen}) > 1


def test_unlabeled_views_are_aligned_without_jitter(coord_data):
    directory, masks = coord_data
    crop, size = (24, 24), 8
    batch = first_batches(input_pipeline.unlabeled_dataset(
        info_of(directory), directory, "train", crop, 16, seed=2,
        cutout_size=size, **NO_JITTER, **FIXED_SCALE))[0]
    assert set(batch) == {"weak_image", "strong_image", "valid_mask",
                          "strong_valid_mask", "monitor_label"}
    full_squares = 0
    for i in range(16):
        weak, strong = batch["weak_image"][i], batch["strong_image"][i]
        valid = batch["valid_mask"][i][..., 0]
        strong_valid = batch["strong_valid_mask"][i][..., 0]
        check_geometry(weak, batch["monitor_label"][i], batch["valid_mask"][i],
                       masks, crop)
        assert set(np.unique(strong_valid)) <= {0.0, 1.0}
        assert np.all(strong_valid <= valid)
        keep = strong_valid > 0
        np.testing.assert_array_equal(strong[keep], weak[keep])
        cut = (valid > 0) & ~keep
        assert np.all(strong[cut] == 127.5)
        assert np.all(strong[valid == 0] == 127.5)
        # The CutOut region is one axis-aligned square clipped to the crop.
        ys, xs = np.nonzero(cut)
        if ys.size:
            box = np.zeros_like(cut)
            box[ys.min():ys.max() + 1, xs.min():xs.max() + 1] = True
            np.testing.assert_array_equal(cut, box & (valid > 0))
            assert ys.max() - ys.min() < size and xs.max() - xs.min() < size
            full_squares += (ys.max() - ys.min() + 1 == size and
                             xs.max() - xs.min() + 1 == size)
    assert full_squares > 0


def test_strong_view_jitter_keeps_padding_and_cutout(coord_data):
    directory, _ = coord_data
    batch = first_batches(input_pipeline.unlabeled_dataset(
        info_of(directory), directory, "train", (24, 24), 8, seed=3,
        cutout_size=8, **FIXED_SCALE))[0]
    valid = batch["valid_mask"][..., 0] > 0
    keep = batch["strong_valid_mask"][..., 0] > 0
    strong, weak = batch["strong_image"], batch["weak_image"]
    assert np.all(strong[~keep] == 127.5)
    assert strong.min() >= 0 and strong.max() <= 255
    changed = np.abs(strong[keep] - weak[keep]).max(axis=-1) > 1
    assert changed.mean() > 0.5
    assert np.all(weak[~valid] == 127.5)


def test_no_cutout(coord_data):
    directory, _ = coord_data
    batch = first_batches(input_pipeline.unlabeled_dataset(
        info_of(directory), directory, "train", (24, 24), 4, seed=3,
        cutout_size=0, **NO_JITTER, **FIXED_SCALE))[0]
    np.testing.assert_array_equal(batch["strong_valid_mask"],
                                  batch["valid_mask"])
    np.testing.assert_array_equal(batch["strong_image"], batch["weak_image"])


def test_random_scale_pipeline_keeps_label_alignment(coord_data):
    directory, masks = coord_data
    batch = first_batches(input_pipeline.labeled_dataset(
        info_of(directory), directory, "train", (48, 64), 8, seed=4,
        min_scale_factor=2.0, max_scale_factor=2.0))[0]
    flips = set()
    for i in range(8):
        image = batch["image"][i]
        label = batch["label"][i][..., 0]
        valid = batch["valid_mask"][i][..., 0] > 0
        flipped = not valid[0, 0]
        flips.add(flipped)
        if flipped:  # undo the flip of all three together
            image, label, valid = image[:, ::-1], label[:, ::-1], valid[:, ::-1]
        # 2x of 20x30 is 40x60, padded to 48x64 (no room to crop).
        assert np.all(valid[:40, :60]) and valid.sum() == 40 * 60
        assert np.all(image[~valid] == 127.5) and np.all(label[~valid] == IGNORE)
        # Nearest-neighbour label at 2x: output (y, x) comes from (y//2, x//2).
        k = int(round((image[0, 0, 2] - 5) / 10))
        np.testing.assert_array_equal(label[:40:2, :60:2], masks[k])
        np.testing.assert_array_equal(label[1:40:2, 1:60:2], masks[k])
        # Bilinear image: output row y samples source row (y + 0.5) / 2 - 0.5.
        rows = image[:40, :60, 0] / 8
        expected_rows = (np.arange(40) + 0.5) / 2 - 0.5
        np.testing.assert_allclose(rows[1:39, 5], expected_rows[1:39], atol=1e-4)
        cols = image[:40, :60, 1] / 8
        expected_cols = (np.arange(60) + 0.5) / 2 - 0.5
        np.testing.assert_allclose(cols[7, 1:59], expected_cols[1:59], atol=1e-4)
    assert flips == {True, False}


def test_scale_factor_values():
    values = {float(augment.random_scale_factor(tf.constant([s, 0]), 0.5, 2.0,
                                                0.25)) for s in range(200)}
    assert values == {0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0}
    continuous = [float(augment.random_scale_factor(tf.constant([s, 1]), 0.5,
                                                    2.0, 0.0))
                  for s in range(50)]
    assert all(0.5 <= v < 2.0 for v in continuous) and len(set(continuous)) == 50
    with pytest.raises(ValueError, match="min_scale_factor"):
        augment.random_scale_factor(tf.constant([0, 0]), 2.0, 1.0, 0.25)


@pytest.mark.parametrize("scale", [0.5, 0.75, 1.5])
def test_scale_image_and_label_alignment(scale):
    # 8x8 blocks with value 40 * class; labels are the classes.
    rng = np.random.default_rng(0)
    classes = rng.integers(0, 6, size=(4, 6))
    label = np.kron(classes, np.ones((8, 8), np.int32))[..., None]
    image = np.repeat(40.0 * label, 3, axis=-1).astype(np.float32)
    out_image, out_label = augment.scale_image_and_label(
        tf.constant(image), tf.constant(label), tf.constant(scale))
    out_image, out_label = out_image.numpy(), out_label.numpy()
    expected_shape = (int(32 * scale), int(48 * scale))
    assert out_image.shape[:2] == expected_shape == out_label.shape[:2]
    # Pixels whose source position lies >= 2.5 px inside a block.
    centres_y = (np.arange(expected_shape[0]) + 0.5) * 32 / expected_shape[0]
    centres_x = (np.arange(expected_shape[1]) + 0.5) * 48 / expected_shape[1]
    inner_y = np.abs(centres_y % 8 - 4) <= 1.5
    inner_x = np.abs(centres_x % 8 - 4) <= 1.5
    block = classes[(centres_y // 8).astype(int)][:, (centres_x // 8).astype(int)]
    inner = inner_y[:, None] & inner_x[None, :]
    assert inner.sum() > 10
    np.testing.assert_array_equal(out_label[..., 0][inner], block[inner])
    np.testing.assert_allclose(out_image[..., 0][inner], 40.0 * block[inner],
                               atol=1e-3)


def _numpy_color_ops(image, order, factors, valid):
    """Reference colour jitter in NumPy (torchvision ColorJitter semantics)."""
    import colorsys  # pylint: disable=g-import-not-at-top
    x = image.astype(np.float64) / 255.0
    weights = np.array([0.2989, 0.587, 0.114])
    for op in order:
        f = factors[op]
        if op == augment.BRIGHTNESS:
            x = np.clip(x * f, 0, 1)
        elif op == augment.CONTRAST:
            gray = x @ weights
            mean = (gray * valid).sum() / valid.sum()
            x = np.clip(f * x + (1 - f) * mean, 0, 1)
        elif op == augment.SATURATION:
            gray = (x @ weights)[..., None]
            x = np.clip(f * x + (1 - f) * gray, 0, 1)
        else:
            flat = x.reshape(-1, 3)
            out = []
            for r, g, b in flat:
                h, s, v = colorsys.rgb_to_hsv(r, g, b)
                out.append(colorsys.hsv_to_rgb((h + f) % 1.0, s, v))
            x = np.clip(np.array(out).reshape(x.shape), 0, 1)
    return x * 255.0


@pytest.mark.parametrize("order,factors", [
    ([0, 1, 2, 3], [1.4, 0.6, 1.3, 0.2]),
    ([3, 2, 1, 0], [0.5, 1.5, 0.5, -0.25]),
    ([2, 0, 3, 1], [1.0, 1.0, 1.0, 0.0]),
])
def test_color_ops_match_numpy(order, factors):
    rng = np.random.default_rng(1)
    image = rng.uniform(0, 255, size=(6, 7, 3)).astype(np.float32)
    valid = np.ones((6, 7), np.float32)
    valid[4:] = 0
    got = augment.apply_color_ops(
        tf.constant(image), tf.constant(order, tf.int32),
        tf.constant(factors, tf.float32), tf.constant(valid[..., None])).numpy()
    np.testing.assert_allclose(got, _numpy_color_ops(image, order, factors,
                                                     valid), atol=0.05)


def test_color_factor_ranges():
    orders, factors = [], []
    for s in range(300):
        order, f = augment.random_color_factors(tf.constant([s, 9]), 0.5, 0.5,
                                                0.5, 0.25)
        orders.append(tuple(order.numpy()))
        factors.append(f.numpy())
    factors = np.array(factors)
    assert all(sorted(o) == [0, 1, 2, 3] for o in orders)
    assert len(set(orders)) > 12
    assert factors[:, :3].min() >= 0.5 and factors[:, :3].max() <= 1.5
    assert factors[:, 3].min() >= -0.25 and factors[:, 3].max() <= 0.25
    assert factors[:, :3].min() < 0.53 and factors[:, :3].max() > 1.47
    assert factors[:, 3].min() < -0.23 and factors[:, 3].max() > 0.23


def test_cutout_mask_squares():
    sizes = set()
    for s in range(100):
        cut = augment.cutout_mask(24, 24, 8, tf.constant([s, 3])).numpy()[..., 0]
        ys, xs = np.nonzero(cut)
        assert ys.size
        box = np.zeros_like(cut)
        box[ys.min():ys.max() + 1, xs.min():xs.max() + 1] = 1
        np.testing.assert_array_equal(cut, box)
        sizes.add((ys.max() - ys.min() + 1, xs.max() - xs.min() + 1))
    assert (8, 8) in sizes and any(h < 8 or w < 8 for h, w in sizes)
    assert max(max(h, w) for h, w in sizes) == 8


def test_same_seed_same_batches(coord_data):
    directory, _ = coord_data
    info = info_of(directory)

    def labeled(seed):
        return first_batches(input_pipeline.labeled_dataset(
            info, directory, "train", 16, 4, seed=seed), n=3)

    def unlabeled(seed):
        return first_batches(input_pipeline.unlabeled_dataset(
            info, directory, "train", 16, 4, seed=seed, cutout_size=6,
            weakly=True), n=3)

    for make in (labeled, unlabeled):
        a, b, c = make(11), make(11), make(12)
        for x, y in zip(a, b):
            assert x.keys() == y.keys()
            for key in x:
                np.testing.assert_array_equal(x[key], y[key])
        assert any(not np.array_equal(x[k], y[k]) for x, y in zip(a, c)
                   for k in x)


def assert_same_batches(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(x[key], y[key], err_msg=key)


@pytest.mark.parametrize("pipelines,replicas,batch", [(1, 1, 4), (1, 2, 4), (2, 2, 4),
                                                      (8, 8, 8)])
def test_resumed_stream_continues_the_uninterrupted_one(coord_data, pipelines, replicas, batch):
    """start_step=k gives the batches an uninterrupted pipeline gives from step
    k on, across epoch boundaries, for one pipeline feeding 1 or 2 replicas
    (one per-replica batch each per step), file sharding (2 pipelines, 4
    files) and record sharding (8 pipelines, 4 files, 1 record each)."""
    directory, _ = coord_data
    info = info_of(directory)
    context = None
    if replicas > 1:
        context = tf.distribute.InputContext(num_input_pipelines=pipelines,
                                             input_pipeline_id=pipelines - 1,
                                             num_replicas_in_sync=replicas)
    per_step = replicas // pipelines  # batches this pipeline gives per step
    make = {"unlabeled": lambda **kw: input_pipeline.unlabeled_dataset(
                info, directory, "train", 12, batch, seed=3, input_context=context,
                cutout_size=4, weakly=True, **kw),
            "labeled": lambda **kw: input_pipeline.labeled_dataset(
                info, directory, "train", 12, batch, seed=4, input_context=context, **kw)}
    for name, dataset in make.items():
        full = first_batches(dataset(), n=6 * per_step)
        for start in (1, 3):
            resumed = first_batches(dataset(start_step=start), n=(6 - start) * per_step)
            assert_same_batches(resumed, full[start * per_step:])
        image = "image" if name == "labeled" else "weak_image"
        assert not np.array_equal(full[0][image], full[per_step][image])  # steps differ


def test_resuming_needs_a_seeded_training_stream(coord_data):
    directory, _ = coord_data
    with pytest.raises(ValueError, match="start_step needs a seeded training pipeline"):
        input_pipeline.labeled_dataset(info_of(directory), directory, "train", 12, 4,
                                       start_step=2)


def test_records_without_masks(coord_data):
    directory, _ = coord_data
    batch = first_batches(input_pipeline.unlabeled_dataset(
        info_of(directory), directory, "nomask", (24, 24), 4, seed=5, **FIXED_SCALE))[0]
    assert np.all(batch["monitor_label"] == IGNORE)
    assert "image_labels" not in batch


def test_weakly_labels_from_mask_crop_exclude_the_cutout(coord_data):
    """The reference's image-level labels: classes of the augmented crop's mask
    after CutOut (which sets the mask to the ignore label)."""
    directory, _ = coord_data
    batch = first_batches(input_pipeline.unlabeled_dataset(
        info_of(directory), directory, "train", (12, 12), 8, seed=6, cutout_size=8,
        weakly=True))[0]
    cut_differs = 0
    for i in range(8):
        label = batch["monitor_label"][i]  # the weak crop's mask, without CutOut
        visible = np.where(batch["strong_valid_mask"][i] > 0, label, IGNORE)
        np.testing.assert_array_equal(batch["image_labels"][i], numpy_presence(visible))
        cut_differs += not np.array_equal(numpy_presence(visible), numpy_presence(label))
    assert cut_differs > 0  # some class lay only under the CutOut square


def test_weakly_crop_labels_need_masks_and_name_the_record(coord_data):
    directory, _ = coord_data
    dataset = input_pipeline.unlabeled_dataset(
        info_of(directory), directory, "nomask", (24, 24), 4, seed=5, weakly=True)
    with pytest.raises(tf.errors.InvalidArgumentError, match="has none.*id:.*im"):
        first_batches(dataset)


def test_weakly_record_labels_need_the_feature(coord_data):
    directory, _ = coord_data
    with pytest.raises(ValueError, match="lacks image/class_labels.*--class_labels"):
        input_pipeline.unlabeled_dataset(
            info_of(directory), directory, "train", (24, 24), 4, seed=5, weakly=True,
            image_label_source="record")
    with pytest.raises(ValueError, match="image_label_source must be one of"):
        input_pipeline.unlabeled_dataset(
            info_of(directory), directory, "train", (24, 24), 4, weakly=True,
            image_label_source="mask")


def test_weakly_labels_from_record_feature(tmp_path):
    out = str(tmp_path)
    info = dataset_info.folder_dataset_info("toy", NUM_CLASSES, IGNORE)
    dataset_info.write_dataset_info_json(info, out)
    mask = np.ones((H, W), np.uint8)  # class 1 everywhere ...
    with conversion.SplitWriter(out, "weak", 1) as writer:
        for labels in ([2, 4], [3], []):   # ... but the image-level labels differ
            writer.write(records.make_example(
                image_bytes=image_io.encode_png(coordinate_image(0)),
                image_format="png", image_id="x", height=H, width=W,
                mask_png=image_io.encode_png(mask), class_labels=labels))
        writer.commit()
    batches = first_batches(input_pipeline.unlabeled_dataset(
        info, out, "weak", 16, 3, seed=0, weakly=True, image_label_source="record",
        check_size=False), n=4)  # the shuffle mixes epochs: look at 12 draws
    got = {tuple(row) for b in batches for row in b["image_labels"].tolist()}
    assert got == {(0, 0, 0, 0), (0, 0, 1, 0), (0, 1, 0, 1)}
    # The default, the crop's mask, sees class 1 only.
    batch = first_batches(input_pipeline.unlabeled_dataset(
        info, out, "weak", 16, 3, seed=0, weakly=True, cutout_size=4, check_size=False))[0]
    assert batch["image_labels"].tolist() == [[1, 0, 0, 0]] * 3


def test_eval_padding_and_original_size(coord_data):
    directory, masks = coord_data
    info = info_of(directory)
    batches = first_batches(input_pipeline.eval_dataset(
        info, directory, "train", eval_crop_size=(25, 33), batch_size=3), n=3)
    seen = []
    for batch in batches:
        for i in range(len(batch["filename"])):
            image, label = batch["image"][i], batch["label"][i][..., 0]
            assert image.shape == (25, 33, 3)
            assert batch["height"][i] == H and batch["width"][i] == W
            k = int(batch["filename"][i].decode()[2:])
            seen.append(k)
            np.testing.assert_array_equal(image[:H, :W], coordinate_image(k))
            assert np.all(image[H:] == 127.5) and np.all(image[:, W:] == 127.5)
            np.testing.assert_array_equal(label[:H, :W], masks[k])
            assert np.all(label[H:] == IGNORE) and np.all(label[:, W:] == IGNORE)
    assert sorted(seen) == list(range(NUM_IMAGES))
    whole = first_batches(input_pipeline.eval_dataset(info, directory, "train"))
    assert whole[0]["image"].shape == (1, H, W, 3)


def test_eval_errors(coord_data):
    directory, _ = coord_data
    info = info_of(directory)
    with pytest.raises(ValueError, match="batch of 1"):
        input_pipeline.eval_dataset(info, directory, "train", None, batch_size=2)
    too_small = input_pipeline.eval_dataset(info, directory, "train", (16, 40))
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="larger than the eval crop 16x40"):
        first_batches(too_small)


def test_labeled_not_training_pads_without_augmentation(coord_data):
    directory, masks = coord_data
    batches = first_batches(input_pipeline.labeled_dataset(
        info_of(directory), directory, "train", (24, 32), 8,
        is_training=False), n=2)
    assert len(batches) == 1 and batches[0]["image"].shape[0] == NUM_IMAGES
    for i in range(NUM_IMAGES):
        index, _, _ = decode_coordinates(batches[0]["image"][i],
                                         batches[0]["valid_mask"][i][..., 0] > 0)
        k = index[0, 0]
        np.testing.assert_array_equal(batches[0]["image"][i][:H, :W],
                                      coordinate_image(k))
        np.testing.assert_array_equal(batches[0]["label"][i][:H, :W, 0], masks[k])


@pytest.mark.parametrize("num_pipelines,shards", [(2, "train"), (4, "nomask"),
                                                  (3, "nomask")])
def test_input_context_shards_disjointly(coord_data, num_pipelines, shards):
    directory, _ = coord_data
    info = info_of(directory)
    names = []
    for pipeline_id in range(num_pipelines):
        context = tf.distribute.InputContext(
            num_input_pipelines=num_pipelines, input_pipeline_id=pipeline_id,
            num_replicas_in_sync=num_pipelines)
        dataset = input_pipeline.eval_dataset(info, directory, shards, (20, 30),
                                              batch_size=num_pipelines,
                                              input_context=context)
        mine = [n.decode() for b in dataset for n in b["filename"].numpy()]
        assert max(len(b["filename"]) for b in dataset) == 1
        names.append(mine)
    flat = [n for mine in names for n in mine]
    assert len(flat) == len(set(flat)) == NUM_IMAGES


def test_per_replica_batch_size(coord_data):
    directory, _ = coord_data
    context = tf.distribute.InputContext(num_input_pipelines=2,
                                         input_pipeline_id=1,
                                         num_replicas_in_sync=2)
    batch = first_batches(input_pipeline.unlabeled_dataset(
        info_of(directory), directory, "train", 16, 6, seed=0,
        input_context=context))[0]
    assert batch["weak_image"].shape == (3, 16, 16, 3)
    with pytest.raises(ValueError, match="global batch_size 5 is not divisible "
                       "by the 2 replicas"):
        input_pipeline.labeled_dataset(info_of(directory), directory, "train", 16,
                                       5, input_context=context)


def test_split_size_warning(coord_data, caplog):
    directory, _ = coord_data
    info = dataset_info.DatasetInfo(
        name="toy", num_classes=NUM_CLASSES, ignore_label=IGNORE,
        class_names=dataset_info.default_class_names(NUM_CLASSES),
        split_sizes={"train": 1464})
    with caplog.at_level("WARNING"):
        assert input_pipeline.check_split_size(info, directory, "train") == 8
    assert "split train has 8 records" in caplog.text
    assert "known size is 1464" in caplog.text
    caplog.clear()
    exact = dataclasses_replace(info, split_sizes={"train": 8})
    with caplog.at_level("WARNING"):
        input_pipeline.check_split_size(exact, directory, "train")
    assert "known size" not in caplog.text


def dataclasses_replace(info, **changes):
    import dataclasses  # pylint: disable=g-import-not-at-top
    return dataclasses.replace(info, **changes)


def test_missing_split_names_the_pattern(coord_data):
    directory, _ = coord_data
    with pytest.raises(FileNotFoundError, match=r"val-\*"):
        input_pipeline.labeled_dataset(info_of(directory), directory, "val", 16, 2)


def test_training_record_sharding_is_disjoint_across_seeds(coord_data):
    # "nomask" has 2 files for 4 pipelines: every 4th record each. Pipelines
    # get different seeds (as train.py does) and still see disjoint images.
    directory, _ = coord_data
    seen = []
    for pipeline_id in range(4):
        context = tf.distribute.InputContext(
            num_input_pipelines=4, input_pipeline_id=pipeline_id,
            num_replicas_in_sync=4)
        batches = first_batches(input_pipeline.labeled_dataset(
            info_of(directory), directory, "nomask", (H, W), 4,
            seed=100 + pipeline_id, input_context=context, **FIXED_SCALE), n=6)
        images = {int(round((b["image"][0, 0, 0, 2] - 5) / 10)) for b in batches}
        assert len(images) == 2
        seen.append(images)
    assert set().union(*seen) == set(range(NUM_IMAGES))


def test_records_written_like_deeplab_read_unchanged(tmp_path):
    """Records built feature by feature as DeepLab's build_voc2012_data does."""
    rng = np.random.default_rng(3)
    path = str(tmp_path / "val-00000-of-00001.tfrecord")
    sources = {}
    with tf.io.TFRecordWriter(path) as writer:
        for i in range(3):
            name = f"2007_00000{i}"
            jpeg_path = str(tmp_path / f"{name}.jpg")
            image = fake_sources.save_jpeg(jpeg_path,
                                           fake_sources.random_image(rng, 21, 17))
            mask = fake_sources.random_mask(rng, 21, 17, range(1, 21), 255)
            sources[name] = (image, mask)

            def feature(value):
                if isinstance(value, int):
                    return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
                return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

            example = tf.train.Example(features=tf.train.Features(feature={
                "image/encoded": feature(open(jpeg_path, "rb").read()),
                "image/filename": feature(name.encode()),
                "image/format": feature(b"jpeg"),
                "image/height": feature(21),
                "image/width": feature(17),
                "image/channels": feature(3),
                "image/segmentation/class/encoded": feature(
                    image_io.encode_png(mask)),
                "image/segmentation/class/format": feature(b"png"),
            }))
            writer.write(example.SerializeToString())
    assert not os.path.exists(tmp_path / "splits.json")
    assert records.count_records(str(tmp_path), "val") == 3  # counted by a pass
    info = dataset_info.get_dataset_info("pascal_voc_seg")
    got = {}
    for batch in input_pipeline.eval_dataset(info, str(tmp_path), "val",
                                             check_size=False):
        got[batch["filename"][0].numpy().decode()] = batch
    assert sorted(got) == sorted(sources)
    for name, (image, mask) in sources.items():
        np.testing.assert_array_equal(got[name]["image"][0].numpy(), image)
        np.testing.assert_array_equal(got[name]["label"][0].numpy()[..., 0], mask)
