"""The TFDS reader (``tfds:NAME``) under ``tfds.testing.mock_data``."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from datasets import dataset_info
from datasets import input_pipeline

NUM_EXAMPLES = 6


def pet_example(index):
    """A deterministic oxford_iiit_pet-like example; mask values 1..3 (trimap)."""
    rng = np.random.default_rng(index)
    height, width = 18 + index, 25 - index
    image = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    mask = np.full((height, width, 1), 2, np.uint8)  # background
    mask[3:10, 4:12] = 1                             # pet
    mask[3:10, 12:14] = 3                            # border (ignored)
    if index % 2:
        mask[:] = 2
    return {
        "image": image,
        "segmentation_mask": mask,
        "file_name": f"pet_{index}.jpg",
        "label": index % 37,
        "species": index % 2,
        "head_bbox": np.array([0.1, 0.1, 0.5, 0.5], np.float32),
    }


def mock_as_dataset(self, split, **kwargs):
    """Replaces TFDS's reading: the examples above, in the builder's structure."""
    del split, kwargs
    features = self.info.features
    return tf.data.Dataset.from_generator(
        lambda: (pet_example(i) for i in range(NUM_EXAMPLES)),
        output_signature={
            name: tf.TensorSpec(shape=feature.shape, dtype=feature.tf_dtype)
            for name, feature in features.items()})


def pet_info(**kwargs):
    return dataset_info.get_dataset_info(
        "tfds:oxford_iiit_pet", num_classes=3, ignore_label=3,
        class_names=["none", "pet", "background"], **kwargs)


def test_tfds_eval_matches_the_examples():
    info = pet_info()
    assert info.is_tfds and info.tfds_name == "oxford_iiit_pet"
    with tfds.testing.mock_data(as_dataset_fn=mock_as_dataset):
        batches = list(input_pipeline.eval_dataset(info, None, "test", (32, 32),
                                                   batch_size=2))
    seen = 0
    for batch in batches:
        for i, name in enumerate(batch["filename"].numpy()):
            index = int(name.decode()[4:-4])
            source = pet_example(index)
            h, w = source["image"].shape[:2]
            assert (batch["height"][i], batch["width"][i]) == (h, w)
            np.testing.assert_array_equal(batch["image"][i].numpy()[:h, :w],
                                          source["image"])
            np.testing.assert_array_equal(batch["label"][i].numpy()[:h, :w],
                                          source["segmentation_mask"])
            assert np.all(batch["label"][i].numpy()[h:] == 3)
            assert np.all(batch["image"][i].numpy()[:, w:] == 127.5)
            seen += 1
    assert seen == NUM_EXAMPLES


def test_tfds_training_batches():
    info = pet_info()
    with tfds.testing.mock_data(as_dataset_fn=mock_as_dataset):
        labeled = next(iter(input_pipeline.labeled_dataset(
            info, None, "train", 16, 8, seed=0)))
        # A CutOut square smaller than the crop, so that the image-level labels
        # (classes visible in the strong view) are neither empty nor the weak crop's.
        unlabeled = next(iter(input_pipeline.unlabeled_dataset(
            info, None, "train", 16, 4, seed=0, weakly=True, cutout_size=8)))
    assert labeled["image"].shape == (8, 16, 16, 3)
    for label, presence in zip(labeled["label"].numpy(),
                               labeled["class_presence"].numpy()):
        values = set(np.unique(label).tolist())
        assert values <= {1, 2, 3}
        np.testing.assert_array_equal(presence, [1 in values, 2 in values])
    assert unlabeled["strong_image"].shape == (4, 16, 16, 3)
    strong_valid = unlabeled["strong_valid_mask"].numpy()
    assert 0 < strong_valid.mean() < 1
    for label, valid, labels in zip(unlabeled["monitor_label"].numpy(), strong_valid,
                                    unlabeled["image_labels"].numpy()):
        values = set(np.unique(label[..., 0][valid[..., 0] > 0]).tolist())
        np.testing.assert_array_equal(labels, [1 in values, 2 in values])


def test_tfds_sharding_with_input_context():
    info = pet_info()
    context = tf.distribute.InputContext(num_input_pipelines=2,
                                         input_pipeline_id=1,
                                         num_replicas_in_sync=2)
    with tfds.testing.mock_data(as_dataset_fn=mock_as_dataset):
        batch = next(iter(input_pipeline.labeled_dataset(
            info, None, "train", 16, 4, seed=0, input_context=context)))
    assert batch["image"].shape == (2, 16, 16, 3)


def test_tfds_missing_mask_feature_is_named():
    info = pet_info(tfds_mask_key="trimap")
    with tfds.testing.mock_data(as_dataset_fn=mock_as_dataset):
        with pytest.raises(ValueError, match="has no mask feature 'trimap'.*"
                           "segmentation_mask"):
            input_pipeline.labeled_dataset(info, None, "train", 16, 2)


def test_tfds_descriptor_needs_class_count():
    with pytest.raises(ValueError, match="--num_classes and --ignore_label"):
        dataset_info.get_dataset_info("tfds:oxford_iiit_pet")
