"""Command line: ``python -m datasets.download voc|coco|msrc|camvid|pretrained``.

    python -m datasets.download voc --root=data          # data/voc, data/sources/voc
    python -m datasets.download coco --root=data         # data/coco, data/sources/coco
    python -m datasets.download msrc --root=data         # data/msrc, data/sources/msrc
    python -m datasets.download camvid --root=data       # data/camvid, data/sources/camvid
    python -m datasets.download pretrained --root=pretrained   # pretrained/<name>/model.ckpt

Downloads every file the target needs (``datasets/download/sources.json``, or
``--sources=FILE`` for a mirror), verifies its checksum, extracts and converts
into the layout the flagfiles expect. A rerun skips what is complete; an
interrupted run is completed by the next one. Errors name the file and leave
nothing half-written in the target (exit status 1).
"""

import os
import sys

from absl import app
from absl import flags

from datasets.download import fetch
from datasets.download import prepare

FLAGS = flags.FLAGS

flags.DEFINE_string("root", None,
                    "Where to write: the data root (default data) for a dataset, the "
                    "checkpoint directory (default pretrained) for 'pretrained'.")
flags.DEFINE_string("sources", fetch.DEFAULT_SOURCES,
                    "JSON file listing every downloadable file (name, url, file_name, "
                    "sha256 or md5); replace it to download from a mirror or a cache.")
flags.DEFINE_string("download_dir", None,
                    "Where downloaded archives are kept (default <root>/downloads).")
flags.DEFINE_integer("num_workers", 1, "Processes reading images while converting.")
flags.DEFINE_bool("overwrite", False,
                  "Replace an existing target directory that this command did not "
                  "write.")
flags.DEFINE_bool("delete_downloads", False,
                  "Delete the downloaded archives once the target is complete.")
flags.DEFINE_list("checkpoints", list(prepare.CHECKPOINTS),
                  "For 'pretrained': which checkpoints.")
flags.DEFINE_string("msrc_train_list", prepare.MSRC_TRAIN_LIST,
                    "For 'msrc': ids of the train split (default: the shipped list).")
flags.DEFINE_string("msrc_val_list", prepare.MSRC_VAL_LIST,
                    "For 'msrc': ids of the val split (default: the shipped list).")

USAGE = ("usage: python -m datasets.download {" + "|".join(prepare.TARGETS)
         + "} [--root=DIR] [--sources=FILE]")


def run(target: str, root=None, sources_file=fetch.DEFAULT_SOURCES, download_dir=None,
        **options) -> str:
    """Prepares ``target``; the library entry point of the command."""
    if target not in prepare.TARGETS:
        raise fetch.DownloadError(f"unknown target {target!r}; {USAGE}")
    root = root or ("pretrained" if target == "pretrained" else "data")
    sources = fetch.load_sources(sources_file)
    download_dir = download_dir or os.path.join(root, "downloads")
    return prepare.TARGETS[target](root=root, sources=sources, download_dir=download_dir,
                                   **options)


def main(argv):
    if len(argv) != 2:
        raise app.UsageError(USAGE)
    try:
        run(argv[1], root=FLAGS.root, sources_file=FLAGS.sources,
            download_dir=FLAGS.download_dir, num_workers=FLAGS.num_workers,
            overwrite=FLAGS.overwrite, delete_downloads=FLAGS.delete_downloads,
            checkpoints=FLAGS.checkpoints, msrc_train_list=FLAGS.msrc_train_list,
            msrc_val_list=FLAGS.msrc_val_list)
    except (fetch.DownloadError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
