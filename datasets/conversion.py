"""Shared machinery of the converters: id lists, atomic sharded writing, flags.

A converter turns a list of items (one per image) into a split of sharded
TFRecords through ``convert_split``:

* each item is loaded by a picklable ``load_fn(item) -> ExampleParts``
  (optionally in worker processes), which raises ``BadInputError`` for bad
  input;
* examples are written round-robin to ``num_shards`` files under temporary
  names (``.{split}-...tmp``, invisible to the ``{split}-*`` glob) and renamed
  into place only when the whole split succeeded, after the split's previous
  shards are removed; a failure deletes the temporary files and leaves any
  previous version of the split untouched;
* with ``skip_bad`` bad items are logged and skipped, and their number is
  reported.
"""

import dataclasses
import glob
import multiprocessing
import os
import sys
from typing import (Any, Callable, Dict, Iterable, Iterator, List, NamedTuple,
                    Optional, Sequence, Tuple)

from absl import flags
from absl import logging

from datasets import records
from datasets.image_io import BadInputError

# Extensions stripped from ids in list files ("JPEGImages/x.jpg" -> "x").
_ID_EXTENSIONS = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG", ".mat")


class ExampleParts(NamedTuple):
    """Everything one record holds, in plain Python types (picklable)."""
    image_id: str
    image_bytes: bytes
    image_format: str
    height: int
    width: int
    mask_png: Optional[bytes]
    class_labels: Optional[List[int]]


@dataclasses.dataclass
class SplitResult:
    """Outcome of one converted split."""
    split: str
    num_written: int
    skipped: List[Tuple[str, str]]  # (path, problem)
    files: List[str]


def normalize_id(token: str) -> str:
    """Id of one list entry: its basename without an image extension.

    Accepts plain ids (``2007_000032``), COCO lists' ``train2017/000000177254``
    and paths such as ``JPEGImages/2007_000032.jpg``.
    """
    base = os.path.basename(token.strip())
    stem, ext = os.path.splitext(base)
    return stem if ext in _ID_EXTENSIONS else base


def read_id_list(path: str) -> List[str]:
    """Reads a list file: one image per line, the id is the first token.

    Blank lines are skipped. Lines may carry further tokens (e.g. a mask path in
    UniMatch-style lists ``JPEGImages/x.jpg SegmentationClass/x.png``); only the
    first is used, normalised by ``normalize_id``.

    Raises:
      FileNotFoundError / ValueError: missing file, no ids, or a duplicate id
        (the message names the file and line).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"id list {path} not found")
    ids, seen = [], {}
    with open(path) as f:
        for line_number, line in enumerate(f, start=1):
            tokens = line.split()
            if not tokens:
                continue
            image_id = normalize_id(tokens[0])
            if image_id in seen:
                raise ValueError(
                    f"{path}:{line_number}: id {image_id!r} already listed on line "
                    f"{seen[image_id]}")
            seen[image_id] = line_number
            ids.append(image_id)
    if not ids:
        raise ValueError(f"id list {path} contains no ids")
    return ids


def write_id_list(path: str, ids: Iterable[str]) -> None:
    """Writes ids one per line (atomically)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp_path = path + f".tmp-{os.getpid()}"
    with open(tmp_path, "w") as f:
        for image_id in ids:
            f.write(image_id + "\n")
    os.replace(tmp_path, path)


def parse_split_lists(values: Optional[Sequence[str]]) -> Dict[str, str]:
    """Parses repeated ``--split_list NAME=FILE`` values into {name: file}."""
    result = {}
    for value in values or ():
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise ValueError(
                f"--split_list {value!r}: expected NAME=FILE (e.g. "
                "16_clean_3=splits/16_clean_3.txt)")
        records.check_split_name(name)
        if name in result:
            raise ValueError(f"--split_list names split {name!r} twice")
        result[name] = path
    return result


class SplitWriter:
    """Writes one split's shards under temporary names; ``commit`` publishes.

    Usage::

      with SplitWriter(output_dir, "train", num_shards=4) as writer:
        for example in examples:
          writer.write(example)
        writer.commit()

    Leaving the ``with`` block without ``commit`` (e.g. on an exception)
    deletes the temporary files.
    """

    def __init__(self, output_dir: str, split: str, num_shards: int):
        import tensorflow as tf  # pylint: disable=g-import-not-at-top
        records.check_split_name(split)
        if num_shards < 1:
            raise ValueError(f"num_shards must be >= 1, got {num_shards}")
        os.makedirs(output_dir, exist_ok=True)
        self._output_dir = output_dir
        self._split = split
        self._num_shards = num_shards
        self._final = [records.shard_filename(output_dir, split, i, num_shards)
                       for i in range(num_shards)]
        self._tmp = [os.path.join(output_dir,
                                  f".{os.path.basename(p)}.tmp-{os.getpid()}")
                     for p in self._final]
        self._writers = [tf.io.TFRecordWriter(p) for p in self._tmp]
        self._count = 0
        self._committed = False

    @property
    def count(self) -> int:
        """Number of examples written so far."""
        return self._count

    def write(self, example) -> None:
        """Appends a ``tf.train.Example`` to the next shard (round-robin)."""
        self._writers[self._count % self._num_shards].write(
            example.SerializeToString())
        self._count += 1

    def _close(self) -> None:
        for writer in self._writers:
            writer.close()
        self._writers = []

    def commit(self) -> List[str]:
        """Closes the shards, replaces the split's old files, renames into place.

        Returns:
          The final shard paths.
        """
        self._close()
        keep = set(self._final)
        pattern = os.path.join(self._output_dir,
                               f"{self._split}-*-of-*.tfrecord")
        for old in glob.glob(pattern):
            if old not in keep:
                os.remove(old)
        for tmp, final in zip(self._tmp, self._final):
            os.replace(tmp, final)
        self._committed = True
        return list(self._final)

    def __enter__(self) -> "SplitWriter":
        return self

    def __exit__(self, *exc_info) -> None:
        if not self._committed:
            self._close()
            for tmp in self._tmp:
                if os.path.exists(tmp):
                    os.remove(tmp)


class _SafeLoader:
    """Picklable ``item -> ("ok", parts) | ("bad", path, problem)`` wrapper.

    Turns ``BadInputError`` into a value, so worker processes never have to
    pickle exceptions.
    """

    def __init__(self, load_fn: Callable[[Any], ExampleParts]):
        self._load_fn = load_fn

    def __call__(self, item: Any) -> tuple:
        try:
            return ("ok", self._load_fn(item))
        except BadInputError as e:
            return ("bad", e.path, e.problem)


def _load_all(load_fn: Callable[[Any], ExampleParts], items: Sequence[Any],
              num_workers: int) -> Iterator[tuple]:
    """Yields ``_SafeLoader`` results in item order, maybe from worker processes.

    Workers are forked; they only run ``load_fn`` (Pillow, NumPy, SciPy,
    pycocotools), never TensorFlow.
    """
    loader = _SafeLoader(load_fn)
    if num_workers <= 1:
        for item in items:
            yield loader(item)
        return
    context = multiprocessing.get_context("fork")
    with context.Pool(num_workers) as pool:
        yield from pool.imap(loader, items, chunksize=8)


def convert_split(output_dir: str,
                  split: str,
                  items: Sequence[Any],
                  load_fn: Callable[[Any], ExampleParts],
                  num_shards: int,
                  skip_bad: bool = False,
                  num_workers: int = 1,
                  progress_every: int = 500) -> SplitResult:
    """Converts ``items`` into split ``split`` of sharded TFRecords, atomically.

    Args:
      output_dir: directory of the records.
      split: split name (files ``{split}-*``).
      items: one entry per image, passed to ``load_fn``.
      load_fn: picklable function returning the ``ExampleParts`` of an item or
        raising ``BadInputError``.
      num_shards: number of shard files (at most one per item).
      skip_bad: skip bad items (logged, counted) instead of failing.
      num_workers: processes loading items in parallel (1: in-process).
      progress_every: log progress every this many items.

    Returns:
      A ``SplitResult``.

    Raises:
      BadInputError: the first bad item when ``skip_bad`` is False; nothing of
        the split is published then.
    """
    total = len(items)
    if total == 0:
        raise ValueError(f"split {split!r}: no images to convert")
    num_shards = max(1, min(num_shards, total))
    skipped: List[Tuple[str, str]] = []
    logging.info("%s: converting %d images into %d shards in %s", split, total,
                 num_shards, output_dir)
    with SplitWriter(output_dir, split, num_shards) as writer:
        for done, result in enumerate(_load_all(load_fn, items, num_workers), 1):
            if result[0] == "bad":
                _, path, problem = result
                if not skip_bad:
                    raise BadInputError(path, problem)
                logging.warning("%s: skipping %s: %s", split, path, problem)
                skipped.append((path, problem))
            else:
                parts = result[1]
                writer.write(records.make_example(
                    image_bytes=parts.image_bytes,
                    image_format=parts.image_format,
                    image_id=parts.image_id,
                    height=parts.height,
                    width=parts.width,
                    mask_png=parts.mask_png,
                    class_labels=parts.class_labels))
            if done % progress_every == 0 or done == total:
                logging.info("%s: %d/%d images (%d skipped)", split, done, total,
                             len(skipped))
        if writer.count == 0:
            raise ValueError(f"split {split!r}: every image was bad; nothing written")
        files = writer.commit()
    records.update_splits_json(output_dir, split, writer.count, num_shards,
                               len(skipped))
    if skipped:
        logging.warning("%s: skipped %d bad images (of %d)", split, len(skipped),
                        total)
    logging.info("%s: wrote %d examples to %s", split, writer.count,
                 os.path.join(output_dir, f"{split}-*"))
    return SplitResult(split=split, num_written=writer.count, skipped=skipped,
                       files=files)


def define_common_flags(default_num_shards: int) -> None:
    """Defines the flags every converter shares."""
    flags.DEFINE_string("output_dir", None,
                        "Directory of the TFRecords (created if missing).")
    flags.DEFINE_integer("num_shards", default_num_shards,
                         "Shard files per split (capped at the image count).")
    flags.DEFINE_multi_string(
        "split_list", [],
        "NAME=FILE, repeatable: also write split NAME from a text file of ids, "
        "one per line (first token of a line; directories and image extensions "
        "are stripped, so published lists such as 16_clean_3.txt or COCO's "
        "train2017/000000177254 lines work as they are).")
    flags.DEFINE_bool("skip_bad", False,
                      "Skip bad images (corrupt file, size mismatch, invalid "
                      "label value, missing file) and report how many, instead "
                      "of stopping with an error.")
    flags.DEFINE_integer("num_workers", 1,
                         "Processes reading and checking images in parallel.")
    flags.DEFINE_integer("progress_every", 500,
                         "Log progress every this many images.")
    flags.DEFINE_bool("class_labels", False,
                      "Also write image/class_labels (image-level foreground "
                      "class ids) for the weakly-labeled mode. The reader "
                      "derives them from the masks when absent.")


def common_flag_values() -> Dict[str, Any]:
    """The values of the shared flags, as keyword arguments of the converters
    (``class_labels`` is left to each converter, whose meaning of it differs)."""
    return dict(split_lists=parse_split_lists(flags.FLAGS.split_list),
                num_shards=flags.FLAGS.num_shards,
                skip_bad=flags.FLAGS.skip_bad,
                num_workers=flags.FLAGS.num_workers,
                progress_every=flags.FLAGS.progress_every)


def run_converter(convert: Callable[[], Optional[Dict[str, SplitResult]]]) -> None:
    """Runs ``convert()`` and prints the count of each split it returns; bad
    input or arguments exit 1 with a one-line error."""
    try:
        results = convert()
    except (BadInputError, ValueError, FileNotFoundError) as e:
        logging.error("%s", e)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    for split, result in (results or {}).items():
        print(f"{split}: {result.num_written} examples, {len(result.skipped)} skipped")
