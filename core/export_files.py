"""Files of an export directory: writing it so that a failure never destroys
an earlier one, and its ``labels.json``.

    with staged_directory("exports/voc_8") as staging:
        ...write the files into staging...

``staging`` is a new directory beside the target (``<name>.tmp-<random>``,
so concurrent exports do not collide). When the block ends normally the
target is swapped for it: the earlier export is renamed aside, the new one
renamed into place, and only then the earlier one deleted. When the block
raises, the staging directory is deleted and the target is left as it was.
Entering fails at once (``OSError``) when the target's parent cannot be
written or the target is a file, before any expensive work.

``labels.json`` (``read_labels``) holds the dataset's name, class names,
ignore label and colour map; this module imports no TensorFlow, so a
``.tflite`` export's labels can be read without it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile

LABELS_FILE = "labels.json"
# Exports are read by other users (a serving process); mkdtemp's 0700 would hide them.
EXPORT_MODE = 0o755


@contextlib.contextmanager
def staged_directory(path: str):
    """Yields a staging directory that replaces ``path`` when the block succeeds."""
    path = os.path.normpath(path)
    if os.path.lexists(path) and not os.path.isdir(path):
        raise NotADirectoryError(f"{path} exists and is not a directory")
    parent = os.path.dirname(path) or "."
    try:
        os.makedirs(parent, exist_ok=True)
    except FileExistsError:
        raise NotADirectoryError(f"{parent} exists and is not a directory") from None
    staging = tempfile.mkdtemp(prefix=os.path.basename(path) + ".tmp-", dir=parent)
    try:
        os.chmod(staging, EXPORT_MODE)
        yield staging
        _swap_into_place(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _swap_into_place(staging: str, path: str):
    if not os.path.lexists(path):
        os.rename(staging, path)
        return
    aside = tempfile.mkdtemp(prefix=os.path.basename(path) + ".old-",
                             dir=os.path.dirname(path) or ".")
    aside = os.path.join(aside, "export")
    os.rename(path, aside)
    try:
        os.rename(staging, path)
    except BaseException:
        os.rename(aside, path)
        raise
    finally:
        shutil.rmtree(os.path.dirname(aside), ignore_errors=True)


def read_labels(export_dir: str) -> dict | None:
    """``labels.json`` of an export directory, or None if it has none."""
    path = os.path.join(export_dir, LABELS_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)
