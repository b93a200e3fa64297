"""``strategy.distribute_datasets_from_function`` with two CPU replicas.

Runs in a subprocess: logical devices must be configured before TensorFlow
initialises, which the test process has already done.
"""

import os
import subprocess
import sys
import textwrap

from datasets import build_folder
from datasets import fake_sources

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent("""
    import sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from datasets import dataset_info, input_pipeline
    directory = sys.argv[1]
    info = dataset_info.get_dataset_info("folder", directory)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    for make in (input_pipeline.labeled_dataset,
                 input_pipeline.unlabeled_dataset):
      dist = strategy.distribute_datasets_from_function(
          lambda ctx: make(info, directory, "train", 16, 6, seed=1,
                           input_context=ctx))
      batch = next(iter(dist))
      key = "image" if "image" in batch else "strong_image"
      shapes = [tuple(v.shape) for v in
                strategy.experimental_local_results(batch[key])]
      print(make.__name__, shapes)
      assert shapes == [(3, 16, 16, 3), (3, 16, 16, 3)], shapes
    print("OK")
""")


def test_distribute_datasets_from_function(tmp_path):
    tree = fake_sources.write_folder_tree(str(tmp_path / "src"), num_images=8)
    out = str(tmp_path / "records")
    build_folder.convert_folder(
        image_dir=tree.image_dir, label_dir=tree.label_dir, output_dir=out,
        split_name="train", num_classes=5, ignore_label=5, num_shards=4)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO)
    result = subprocess.run([sys.executable, "-c", SCRIPT, out], cwd=REPO,
                            env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "OK" in result.stdout
