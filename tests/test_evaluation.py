"""Multi-scale and flip averaging of eval.py's predictions against numpy."""

import numpy as np
import tensorflow as tf

from core.evaluation import multi_scale_probabilities, parse_crop
from tests.numpy_reference import resize_bilinear_align_corners, softmax


def _position_dependent(images):
    """Class scores that depend on the pixel value and on the column: a
    prediction that is not flip-symmetric."""
    width = tf.shape(images)[2]
    column = tf.cast(tf.range(width), tf.float32)[None, None, :, None]
    column = tf.broadcast_to(column, tf.concat([tf.shape(images)[:3], [1]], 0))
    logits = tf.concat([images[..., :1] / 50.0, column / 3.0, -images[..., 1:2] / 80.0], -1)
    return tf.nn.softmax(logits, axis=-1)


def _numpy_position_dependent(images):
    column = np.arange(images.shape[2], dtype=np.float64)[None, None, :, None]
    column = np.broadcast_to(column, images.shape[:3] + (1,))
    return softmax(np.concatenate([images[..., :1] / 50.0, column / 3.0,
                                   -images[..., 1:2] / 80.0], -1))


def test_flip_averaging_mirrors_the_flipped_prediction_back():
    images = np.random.default_rng(0).uniform(0, 255, (2, 7, 9, 3)).astype(np.float32)
    result = multi_scale_probabilities(_position_dependent, tf.constant(images),
                                       add_flipped_images=True).numpy()
    direct = _numpy_position_dependent(images)
    mirrored = _numpy_position_dependent(images[:, :, ::-1])[:, :, ::-1]
    np.testing.assert_allclose(result, (direct + mirrored) / 2, atol=1e-5)


def test_scales_resize_the_input_and_bring_probabilities_back_to_its_size():
    images = np.random.default_rng(1).uniform(0, 255, (1, 9, 13, 3)).astype(np.float32)
    result = multi_scale_probabilities(_position_dependent, tf.constant(images),
                                       eval_scales=(1.0, 0.5)).numpy()
    # Scale 0.5: DeepLab's scaled size (n - 1) * s + 1 = (5, 7).
    small = resize_bilinear_align_corners(images, (5, 7))
    back = resize_bilinear_align_corners(_numpy_position_dependent(small), (9, 13))
    np.testing.assert_allclose(result, (_numpy_position_dependent(images) + back) / 2,
                               atol=1e-4)


def test_parse_crop():
    assert parse_crop(["513", "513"]) == (513, 513)
    assert parse_crop(["321"]) == (321, 321)
    assert parse_crop(["none"], default=(9, 9)) is None
    assert parse_crop(None, default=(9, 9)) == (9, 9)
    for bad in (["a", "b"], ["1", "2", "3"], ["0", "5"]):
        try:
            parse_crop(bad)
        except ValueError as error:
            assert "crop" in str(error)
        else:
            raise AssertionError(f"{bad} accepted")


def test_per_image_confusion_matrices_match_numpy_and_sum_to_the_split(tmp_path):
    """evaluate(per_image=True): each image's confusion matrix (padding and the
    ignore label left out) equals numpy's, in a batch of 2 with a short last batch;
    they sum to the split's matrix and survive the .npz round trip with their ids."""
    from core.evaluation import (evaluate, read_per_image_confusion,
                                 write_per_image_confusion)

    rng = np.random.default_rng(2)
    num_classes, ignore = 3, 255
    labels = rng.integers(0, num_classes, (3, 6, 7, 1)).astype(np.int32)
    labels[0, 0, :3] = ignore
    heights, widths = [6, 4, 5], [7, 7, 3]  # original extents inside the padded crop
    images = rng.uniform(0, 255, (3, 6, 7, 3)).astype(np.float32)
    batches = [dict(image=images[i:i + 2], label=labels[i:i + 2],
                    height=np.array(heights[i:i + 2]), width=np.array(widths[i:i + 2]),
                    filename=np.array([f"id{j}".encode() for j in range(i, min(i + 2, 3))]))
               for i in (0, 2)]
    dataset = tf.data.Dataset.from_generator(
        lambda: iter(batches), output_signature=dict(
            image=tf.TensorSpec([None, 6, 7, 3], tf.float32),
            label=tf.TensorSpec([None, 6, 7, 1], tf.int32),
            height=tf.TensorSpec([None], tf.int64), width=tf.TensorSpec([None], tf.int64),
            filename=tf.TensorSpec([None], tf.string)))
    result = evaluate(lambda x: _position_dependent(x), dataset, num_classes, ignore,
                      per_image=True, log_every=0)
    predictions = _numpy_position_dependent(images.astype(np.float64)).argmax(-1)
    assert result["image_ids"] == ["id0", "id1", "id2"]
    for index in range(3):
        label = labels[index, :heights[index], :widths[index], 0]
        predicted = predictions[index, :heights[index], :widths[index]]
        keep = label != ignore
        expected = np.zeros((num_classes, num_classes), np.int64)
        np.add.at(expected, (label[keep], predicted[keep]), 1)
        np.testing.assert_array_equal(result["per_image_confusion"][index], expected)
    np.testing.assert_array_equal(result["per_image_confusion"].sum(0),
                                  result["confusion_matrix"])
    path = str(tmp_path / "per_image.npz")
    write_per_image_confusion(path, result["image_ids"], result["per_image_confusion"],
                              evaluated="ckpt-3")
    loaded = read_per_image_confusion(path)
    assert loaded["image_ids"] == ["id0", "id1", "id2"] and loaded["evaluated"] == "ckpt-3"
    np.testing.assert_array_equal(loaded["confusion"], result["per_image_confusion"])
