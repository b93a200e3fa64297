"""Every flagfile under configs/ parses with train.py's flags and passes its checks."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SCRIPT = """
import glob, sys
from absl import flags
import train
FLAGS = flags.FLAGS
for path in sorted(glob.glob("configs/**/*.flags", recursive=True)):
    if path.endswith("base.flags"):
        continue
    FLAGS.unparse_flags()
    FLAGS(["train.py", f"--flagfile={path}"])
    crop = train.validate_flags(num_replicas=FLAGS.train_batch_size)
    print(path, FLAGS.mode, FLAGS.model_variant, FLAGS.train_split, crop,
          FLAGS.training_number_of_steps)
"""


def test_every_flagfile_parses_and_validates():
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True,
                            text=True, timeout=120,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    assert len(lines) == len([p for p in REPO.glob("configs/**/*.flags")
                              if p.name != "base.flags"])
    assert lines["configs/voc/pseudoseg_1_16.flags"].split()[:3] == [
        "pseudoseg", "xception_65", "16_clean_3"]
    assert lines["configs/coco/supervised_1_512.flags"].split()[-1] == "200000"
    assert "(513, 513)" in lines["configs/voc/supervised_1_2.flags"]
