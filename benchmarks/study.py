"""Runs a semi-supervised study from a spec: data, splits, training, evaluation, report, summary.

    python benchmarks/study.py --spec=benchmarks/studies/msrc.json --work_dir=/tmp/msrc_study
    python benchmarks/study.py --spec=benchmarks/studies/msrc.json --work_dir=/tmp/msrc_study \\
        --arms=S,F --seeds=0                      # a part; its results merge with the others
    python benchmarks/study.py --spec=... --work_dir=... --summary_only   # rebuild the summary

A study spec (JSON, ``benchmarks/studies/*.json``; see ``load_spec`` for every
field) names the dataset and its source folder, the partitions of the training
split into pixel-labeled and unlabeled (or image-level labeled) images, and the
arms: a flagfile of ``train.py`` each, with the seeds to run and the partition
it trains on. The runner, each step skipped when its output exists (so an
interrupted study resumes; an interrupted training resumes from its last
checkpoint):

1. Source: the dataset folder (``images/<split>/<stem>.jpg|png``,
   ``labels/<split>/<stem>.png``, ``<split>.txt``), or with ``scale`` in the
   spec a resized copy of it in ``<work_dir>/source`` (images bilinear,
   antialiased, saved as PNG; masks nearest).
2. Splits: ``datasets/make_splits.py`` draws each partition's labeled ids from
   the training split (1/N or K images, every class covered, deterministic for
   the seed) and writes the rest as its unlabeled list, for every seed the
   partition names.
3. Records: ``datasets/build_folder.py`` converts the training split (with
   ``--class_labels``: the classes of each whole mask, which the weakly mode
   reads as image-level labels) and every partition list, and the other source
   splits, into ``<work_dir>/records``.
4. Runs: for each arm and seed (``<arm>_seed<seed>``):
   ``train.py --flagfile=<arm's flagfile> --train_logdir=<work_dir>/runs/<run>
   --dataset_dir=<work_dir>/records --seed=<seed> --train_split=<labeled split>
   [--train_split_cls=<unlabeled split>]`` (seed s trains on the partition drawn
   with seed s, so runs of two arms with the same seed share labeled images and
   training seed); then ``eval.py`` on every split of ``--eval_splits`` (any
   split whose records are in ``<work_dir>/records``); then, for the runs the
   spec's ``report`` names, ``python -m wss.pseudo_label_report`` on the run's
   unlabeled split. The runner sets ``--seed``, ``--train_split``,
   ``--train_split_cls``, ``--train_logdir`` and ``--dataset_dir``; values in
   the flagfiles are the defaults of a hand-run ``train.py``.
5. ``<work_dir>/results/<run>.json`` per run (mIoU and per-class IoU per
   evaluated split, wall times, what the initial checkpoint loaded, the
   pseudo-label report), written when the run's steps finish; and from every
   result file present, ``<work_dir>/summary.json`` and ``summary.md``: mean and
   sample standard deviation (ddof=1) of mIoU per arm over seeds, the spec's
   seed-paired differences (arm A minus arm B on the same seeds), per-class IoU,
   the pseudo-label table and the wall times. So runs made by separate
   invocations (``--arms``, ``--seeds``, side by side on separate machines with
   a shared work dir) merge into one summary. Each invocation's wall time
   (data preparation included) is appended to ``<work_dir>/invocations.json``
   and listed in the summary.

``--parallel=N`` runs N runs side by side, each with ``TF_NUM_INTRAOP_THREADS``
(and ``OMP_NUM_THREADS``) set to the CPU count / N. Logs go to
``<work_dir>/logs/<run>.{train,eval,report}.log``.
"""

from __future__ import annotations

if __package__ in (None, ""):
    import os, sys  # pylint: disable=g-multiple-import
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import dataclasses
import datetime
import glob
import json
import math
import os
import platform
import queue
import re
import subprocess
import sys
import threading
import time
from typing import Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALL = "all"  # partition of arms that train on the whole training split
INVOCATIONS = "invocations.json"  # wall time of every invocation that trained or evaluated


class SpecError(ValueError):
    """A study spec or one of its flagfiles is wrong; the message names the file and field."""


# -- spec -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """Where the data comes from and how to convert it.

    name: the dataset's name (``train.py --dataset``); a registered name
      (``datasets.dataset_info``, e.g. msrc) brings its classes, otherwise the
      spec gives ``num_classes``, ``ignore_label`` and ``class_names``.
    source_dir: the source folder, relative to the repository root or absolute.
    train_split: the source split the partitions are drawn from.
    eval_source_splits: further source splits converted with masks (e.g. val).
    scale: resize factor of a copy of the source (1.0: use it as is).
    """
    name: str
    source_dir: str
    num_classes: int
    ignore_label: int
    class_names: tuple
    train_split: str = "train"
    eval_source_splits: tuple = ("val",)
    scale: float = 1.0
    num_shards: int = 4


@dataclasses.dataclass(frozen=True)
class PartitionSpec:
    """Pixel-labeled / unlabeled partition of the training split.

    Exactly one of ``denominator`` (round(pool / N) labeled) and ``num_labeled``.
    ``seeds``: one draw per seed, used by the runs of that training seed; or
    ``fixed_seed``: one draw shared by every run. ``labeled`` and ``unlabeled``
    are split names, with ``{seed}`` standing for the draw's seed.
    """
    name: str
    labeled: str
    unlabeled: str
    denominator: Optional[int] = None
    num_labeled: Optional[int] = None
    seeds: Optional[tuple] = None
    fixed_seed: Optional[int] = None

    def draw_seeds(self):
        return self.seeds if self.seeds is not None else (self.fixed_seed,)

    def draw_seed(self, run_seed: int) -> int:
        return self.fixed_seed if self.seeds is None else run_seed

    def split_names(self, draw_seed: int) -> tuple:
        return (self.labeled.format(seed=draw_seed), self.unlabeled.format(seed=draw_seed))


@dataclasses.dataclass(frozen=True)
class ArmSpec:
    """One row of the study: a flagfile trained with each seed on a partition."""
    id: str
    title: str
    flagfile: str
    partition: str
    seeds: tuple
    settings: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

    @property
    def mode(self) -> str:
        return self.settings["mode"]


@dataclasses.dataclass(frozen=True)
class Spec:
    path: str
    description: str
    dataset: DatasetSpec
    partitions: dict
    arms: dict  # id -> ArmSpec, in spec order
    pairs: tuple  # ((a, b), ...): a - b
    report: tuple  # ((arm, seed), ...)
    eval_flags: tuple = ()


def _fail(path, field, problem):
    raise SpecError(f"{path}: {field}: {problem}")


def _get(path, obj, key, kind, where, default=dataclasses.MISSING):
    """``obj[key]`` checked to be of ``kind``; errors name ``where.key``."""
    if key not in obj:
        if default is dataclasses.MISSING:
            _fail(path, f"{where}.{key}" if where else key, "missing")
        return default
    value = obj[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        _fail(path, f"{where}.{key}" if where else key, f"expected {kind}, got {value!r}")
    if not isinstance(value, kinds):
        names = "/".join(k.__name__ for k in kinds)
        _fail(path, f"{where}.{key}" if where else key, f"expected {names}, got {value!r}")
    return value


def _check_keys(path, obj, allowed, where):
    unknown = sorted(set(obj) - set(allowed))
    if unknown:
        _fail(path, where or "spec", f"unknown field(s) {unknown}; known: {sorted(allowed)}")


def _seed_list(path, value, where):
    if (not isinstance(value, list) or not value
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value)
            or len(set(value)) != len(value)):
        _fail(path, where, f"expected a non-empty list of distinct seeds >= 0, got {value!r}")
    return tuple(value)


def read_flagfile(path, seen=(), counts=None):
    """``{flag: value}`` of a flagfile, nested ``--flagfile`` included (later wins).

    Boolean forms ``--name`` and ``--noname`` give "true" and "false"; a
    repeated flag keeps its last value here (enough for the flags the runner
    reads; absl appends the values of a repeated flag such as
    ``--atrous_rates``). ``counts``, a dict, receives how often each flag
    occurs. Nested paths are relative to the repository root, as ``train.py``
    (run there) resolves them.
    """
    path = os.path.join(REPO, path)
    if not os.path.isfile(path):
        raise SpecError(f"flagfile {path} does not exist")
    if path in seen:
        raise SpecError(f"flagfile {path} includes itself")
    values = {}
    with open(path) as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if not line.startswith("--"):
                raise SpecError(f"{path}:{number}: expected --flag=value, got {line!r}")
            name, has_value, value = line[2:].partition("=")
            if name == "flagfile":
                values.update(read_flagfile(value, (*seen, path), counts))
                continue
            if has_value:
                values[name] = value
            elif name.startswith("no"):
                name = name[2:]
                values[name] = "false"
            else:
                values[name] = "true"
            if counts is not None:
                counts[name] = counts.get(name, 0) + 1
    return values


def flags_of(arguments):
    """``{flag: value}`` of ``--name=value`` arguments (e.g. ``--extra_train_flags``)."""
    values = {}
    for argument in arguments:
        if not argument.startswith("--"):
            raise SpecError(f"--extra_train_flags: expected --flag=value, got {argument!r} "
                            f"(repeat --extra_train_flags once per flag)")
        name, has_value, value = argument[2:].partition("=")
        if name == "flagfile":
            values.update(read_flagfile(value))
        elif has_value:
            values[name] = value
        elif name.startswith("no"):
            values[name[2:]] = "false"
        else:
            values[name] = "true"
    return values


def load_spec(path, extra_train_flags=()):
    """Reads and validates a study spec; raises SpecError naming the file and field.

    Fields (JSON object):

    * ``description``: one line.
    * ``dataset``: ``name``, ``source_dir``, optional ``train_split`` ("train"),
      ``eval_source_splits`` (["val"]), ``scale`` (1.0), ``num_shards`` (4);
      ``num_classes``, ``ignore_label``, ``class_names`` unless the name is a
      registered dataset (then they are the descriptor's and must not be given).
    * ``partitions``: ``{name: {"denominator": N | "num_labeled": K,
      "seeds": [...] | "fixed_seed": s, "labeled": "labeled_{seed}",
      "unlabeled": "unlabeled_{seed}"}}``; the name ``all`` is reserved for
      the whole training split.
    * ``arms``: a list of ``{"id", "title", "flagfile", "partition", "seeds"}``;
      the flagfile must set ``--mode``, ``--training_number_of_steps`` and
      ``--dataset`` (the spec's dataset), and any ``--train_split`` in it must
      be a labeled split of the arm's partition. Arms on a partition with
      ``seeds`` may only use those seeds.
    * ``pairs``: ``[["P", "S"], ...]``: seed-paired differences P - S reported.
    * ``report``: ``[{"arm": "P", "seed": 0}, ...]``: runs whose pseudo labels
      the report scores (PseudoSeg arms with a partition).
    * ``eval_flags``: extra ``eval.py`` flags (e.g. ``--eval_crop_size=none``).
    """
    try:
        with open(path) as f:
            raw = json.load(f)
    except FileNotFoundError:
        raise SpecError(f"{path}: no such study spec") from None
    except json.JSONDecodeError as error:
        raise SpecError(f"{path}: not valid JSON: {error}") from None
    if not isinstance(raw, dict):
        _fail(path, "spec", "expected a JSON object")
    _check_keys(path, raw, ("description", "dataset", "partitions", "arms", "pairs", "report",
                            "eval_flags"), "")
    dataset = _load_dataset(path, _get(path, raw, "dataset", dict, ""))
    partitions = {}
    for name, body in _get(path, raw, "partitions", dict, "").items():
        partitions[name] = _load_partition(path, name, body)
    split_names = {}
    for partition in partitions.values():
        for seed in partition.draw_seeds():
            for split in partition.split_names(seed):
                if split in split_names or split in (dataset.train_split,
                                                     *dataset.eval_source_splits):
                    _fail(path, f"partitions.{partition.name}",
                          f"split name {split!r} is used twice")
                split_names[split] = partition.name
    extra = flags_of(extra_train_flags)
    arms = {}
    arms_raw = _get(path, raw, "arms", list, "")
    if not arms_raw:
        _fail(path, "arms", "no arms")
    for index, body in enumerate(arms_raw):
        arm = _load_arm(path, index, body, dataset, partitions, extra)
        if arm.id in arms:
            _fail(path, f"arms[{index}].id", f"{arm.id!r} is used twice")
        arms[arm.id] = arm
    pairs = []
    for index, pair in enumerate(_get(path, raw, "pairs", list, "", [])):
        if (not isinstance(pair, list) or len(pair) != 2
                or not all(isinstance(a, str) for a in pair)):
            _fail(path, f"pairs[{index}]", f"expected [arm, arm], got {pair!r}")
        for arm_id in pair:
            if arm_id not in arms:
                _fail(path, f"pairs[{index}]", f"unknown arm {arm_id!r}; arms: {list(arms)}")
        if pair[0] == pair[1]:
            _fail(path, f"pairs[{index}]", "pairs an arm with itself")
        pairs.append(tuple(pair))
    report = []
    for index, entry in enumerate(_get(path, raw, "report", list, "", [])):
        where = f"report[{index}]"
        if not isinstance(entry, dict):
            _fail(path, where, f"expected {{\"arm\": ..., \"seed\": ...}}, got {entry!r}")
        _check_keys(path, entry, ("arm", "seed"), where)
        arm_id = _get(path, entry, "arm", str, where)
        seed = _get(path, entry, "seed", int, where)
        if arm_id not in arms:
            _fail(path, f"{where}.arm", f"unknown arm {arm_id!r}")
        arm = arms[arm_id]
        if seed not in arm.seeds:
            _fail(path, f"{where}.seed",
                  f"arm {arm_id} has no seed {seed} (seeds {list(arm.seeds)})")
        if arm.mode != "pseudoseg" or arm.partition == ALL:
            _fail(path, where, f"arm {arm_id} is not a PseudoSeg arm with unlabeled data")
        report.append((arm_id, seed))
    eval_flags = _get(path, raw, "eval_flags", list, "", [])
    if not all(isinstance(f, str) and f.startswith("--") for f in eval_flags):
        _fail(path, "eval_flags", f"expected a list of --flag=value strings, got {eval_flags!r}")
    return Spec(path=path, description=_get(path, raw, "description", str, "", ""),
                dataset=dataset, partitions=partitions, arms=arms, pairs=tuple(pairs),
                report=tuple(report), eval_flags=tuple(eval_flags))


def _load_dataset(path, raw):
    from datasets import dataset_info

    where = "dataset"
    _check_keys(path, raw, ("name", "source_dir", "train_split", "eval_source_splits", "scale",
                            "num_shards", "num_classes", "ignore_label", "class_names"), where)
    name = _get(path, raw, "name", str, where)
    described = {k for k in ("num_classes", "ignore_label", "class_names") if k in raw}
    if name in dataset_info.registered_names():
        if described:
            _fail(path, where, f"{sorted(described)} are given by the registered dataset "
                               f"{name!r}; remove them")
        info = dataset_info.get_dataset_info(name)
        num_classes, ignore_label, class_names = (info.num_classes, info.ignore_label,
                                                  info.class_names)
    else:
        num_classes = _get(path, raw, "num_classes", int, where)
        ignore_label = _get(path, raw, "ignore_label", int, where)
        class_names = _get(path, raw, "class_names", list, where)
        try:
            dataset_info.folder_dataset_info(name, num_classes, ignore_label, class_names)
        except ValueError as error:
            _fail(path, where, str(error))
    scale = float(_get(path, raw, "scale", (int, float), where, 1.0))
    if not 0 < scale <= 4:
        _fail(path, f"{where}.scale", f"expected a factor in (0, 4], got {scale}")
    eval_source_splits = _get(path, raw, "eval_source_splits", list, where, ["val"])
    return DatasetSpec(
        name=name, source_dir=_get(path, raw, "source_dir", str, where),
        num_classes=num_classes, ignore_label=ignore_label, class_names=tuple(class_names),
        train_split=_get(path, raw, "train_split", str, where, "train"),
        eval_source_splits=tuple(eval_source_splits), scale=scale,
        num_shards=_get(path, raw, "num_shards", int, where, 4))


def _load_partition(path, name, raw):
    where = f"partitions.{name}"
    if name == ALL:
        _fail(path, where, f"{ALL!r} is reserved for the whole training split")
    if not isinstance(raw, dict):
        _fail(path, where, f"expected an object, got {raw!r}")
    _check_keys(path, raw, ("denominator", "num_labeled", "seeds", "fixed_seed", "labeled",
                            "unlabeled"), where)
    denominator = _get(path, raw, "denominator", int, where, None)
    num_labeled = _get(path, raw, "num_labeled", int, where, None)
    if (denominator is None) == (num_labeled is None):
        _fail(path, where, "give exactly one of denominator and num_labeled")
    if (denominator or num_labeled or 1) < 1:
        _fail(path, where, "denominator and num_labeled must be >= 1")
    if ("seeds" in raw) == ("fixed_seed" in raw):
        _fail(path, where, "give exactly one of seeds (one draw per training seed) and "
                           "fixed_seed (one draw for every run)")
    seeds = _seed_list(path, raw["seeds"], f"{where}.seeds") if "seeds" in raw else None
    fixed_seed = _get(path, raw, "fixed_seed", int, where, None)
    labeled = _get(path, raw, "labeled", str, where)
    unlabeled = _get(path, raw, "unlabeled", str, where)
    for key, pattern in (("labeled", labeled), ("unlabeled", unlabeled)):
        if seeds is not None and len(seeds) > 1 and "{seed}" not in pattern:
            _fail(path, f"{where}.{key}", f"{pattern!r} must contain {{seed}} (several seeds)")
        try:
            example = pattern.format(seed=0)
        except (KeyError, IndexError, ValueError) as error:
            _fail(path, f"{where}.{key}", f"bad pattern {pattern!r}: {error}")
        if not re.fullmatch(r"[A-Za-z0-9_.]+", example):
            _fail(path, f"{where}.{key}", f"split names may hold letters, digits, _ and . "
                                          f"only, got {example!r}")
    return PartitionSpec(name=name, labeled=labeled, unlabeled=unlabeled,
                         denominator=denominator, num_labeled=num_labeled,
                         seeds=seeds, fixed_seed=fixed_seed)


def _load_arm(path, index, raw, dataset, partitions, extra):
    where = f"arms[{index}]"
    if not isinstance(raw, dict):
        _fail(path, where, f"expected an object, got {raw!r}")
    _check_keys(path, raw, ("id", "title", "flagfile", "partition", "seeds"), where)
    arm_id = _get(path, raw, "id", str, where)
    if not re.fullmatch(r"[A-Za-z0-9_]+", arm_id):
        _fail(path, f"{where}.id", f"letters, digits and _ only, got {arm_id!r}")
    where = f"arms[{index}] ({arm_id})"
    flagfile = _get(path, raw, "flagfile", str, where)
    partition = _get(path, raw, "partition", str, where)
    seeds = _seed_list(path, raw.get("seeds"), f"{where}.seeds")
    if partition != ALL:
        if partition not in partitions:
            _fail(path, f"{where}.partition", f"unknown partition {partition!r}; known: "
                                              f"{[ALL, *partitions]}")
        part = partitions[partition]
        if part.seeds is not None and set(seeds) - set(part.seeds):
            _fail(path, f"{where}.seeds", f"seeds {sorted(set(seeds) - set(part.seeds))} have "
                                          f"no draw of partition {partition!r} (its seeds: "
                                          f"{list(part.seeds)})")
    counts = {}
    try:
        settings = {**read_flagfile(flagfile, counts=counts), **extra}
    except SpecError as error:
        _fail(path, f"{where}.flagfile", str(error))
    repeated = sorted(name for name in extra if counts.get(name, 0) > 1)
    if repeated:
        raise SpecError(f"--extra_train_flags: {['--' + n for n in repeated]} are repeated "
                        f"flags in {flagfile}; train.py would append the extra values to "
                        f"the flagfile's instead of replacing them: change the flagfile")
    for name in ("mode", "training_number_of_steps", "dataset"):
        if name not in settings:
            _fail(path, f"{where}.flagfile", f"{flagfile} does not set --{name} (the runner "
                                             f"needs it explicitly)")
    if settings["mode"] not in ("supervised", "pseudoseg"):
        _fail(path, f"{where}.flagfile", f"{flagfile}: --mode={settings['mode']} is unknown")
    if settings["dataset"] != dataset.name:
        _fail(path, f"{where}.flagfile", f"{flagfile} sets --dataset={settings['dataset']}, "
                                         f"the spec's dataset is {dataset.name!r}")
    if settings["mode"] == "pseudoseg" and partition == ALL:
        _fail(path, f"{where}.partition", "a PseudoSeg arm needs a partition with unlabeled "
                                          f"images, not {ALL!r}")
    if "train_split" in settings:
        allowed = ({dataset.train_split} if partition == ALL else
                   {partitions[partition].split_names(s)[0]
                    for s in partitions[partition].draw_seeds()})
        if settings["train_split"] not in allowed:
            _fail(path, f"{where}.flagfile",
                  f"{flagfile} sets --train_split={settings['train_split']}, which is not a "
                  f"labeled split of partition {partition!r} ({sorted(allowed)})")
    try:
        int(settings["training_number_of_steps"])
    except ValueError:
        _fail(path, f"{where}.flagfile", f"{flagfile}: --training_number_of_steps="
                                         f"{settings['training_number_of_steps']} is not a number")
    return ArmSpec(id=arm_id, title=_get(path, raw, "title", str, where, arm_id),
                   flagfile=flagfile, partition=partition, seeds=seeds, settings=settings)


# -- runs -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run of an arm, with its splits."""
    arm: ArmSpec
    seed: int
    train_split: str
    unlabeled_split: Optional[str]

    @property
    def name(self) -> str:
        return f"{self.arm.id}_seed{self.seed}"


def plan_runs(spec, arms=None, seeds=None):
    """The runs of ``arms`` (default all) restricted to ``seeds``, in spec order."""
    unknown = sorted(set(arms or ()) - set(spec.arms))
    if unknown:
        raise SpecError(f"--arms: unknown arm(s) {unknown}; {spec.path} has {list(spec.arms)}")
    runs = []
    for arm in spec.arms.values():
        if arms and arm.id not in arms:
            continue
        for seed in arm.seeds:
            if seeds is not None and seed not in seeds:
                continue
            if arm.partition == ALL:
                train_split, unlabeled = spec.dataset.train_split, None
            else:
                partition = spec.partitions[arm.partition]
                train_split, unlabeled = partition.split_names(partition.draw_seed(seed))
                if arm.mode != "pseudoseg":
                    unlabeled = None
            runs.append(Run(arm, seed, train_split, unlabeled))
    return runs


def train_command(run, work_dir, records_dir, extra_train_flags=()):
    """The ``train.py`` argument list of a run (without the interpreter)."""
    args = ["train.py", f"--flagfile={run.arm.flagfile}",
            f"--train_logdir={os.path.join(work_dir, 'runs', run.name)}",
            f"--dataset_dir={records_dir}", f"--seed={run.seed}",
            f"--train_split={run.train_split}"]
    if run.unlabeled_split:
        args.append(f"--train_split_cls={run.unlabeled_split}")
    return args + list(extra_train_flags)


# -- statistics -------------------------------------------------------------------


def mean_std(values):
    """(mean, sample standard deviation with ddof=1 or None for one value)."""
    values = [float(v) for v in values]
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    variance = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(variance)


def load_results(results_dir):
    """``{run name: result}`` of every ``<results_dir>/*.json``."""
    results = {}
    for path in sorted(glob.glob(os.path.join(results_dir, "*.json"))):
        with open(path) as f:
            try:
                result = json.load(f)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path} is not valid JSON: {error}") from None
        for key in ("arm", "seed", "eval"):
            if key not in result:
                raise ValueError(f"{path} lacks {key!r}: not a result of benchmarks/study.py")
        results[os.path.splitext(os.path.basename(path))[0]] = result
    return results


def summarize(spec, results):
    """The study summary from per-run results (mIoU in points: 100 x fraction).

    Per arm and evaluated split: mean and sample standard deviation over the
    seeds present, the per-seed values and the mean per-class IoU; per pair
    (A, B) and split: the differences A - B on the seeds both have, their mean,
    standard deviation, minimum and whether every one is positive.
    """
    by_arm = {}
    ignored = []
    for name, result in sorted(results.items()):
        if result["arm"] not in spec.arms:
            ignored.append(name)
            continue
        by_arm.setdefault(result["arm"], {})[int(result["seed"])] = result
    splits = sorted({split for r in results.values() for split in r["eval"]},
                    key=lambda s: (s != "val", s))
    arms = {}
    for arm_id, arm in spec.arms.items():
        runs = by_arm.get(arm_id, {})
        entry = dict(title=arm.title, flagfile=arm.flagfile, partition=arm.partition,
                     mode=arm.mode, seeds_planned=list(arm.seeds), seeds=sorted(runs),
                     splits={})
        for split in splits:
            per_seed = {seed: r["eval"][split] for seed, r in sorted(runs.items())
                        if split in r["eval"]}
            if not per_seed:
                continue
            mean, std = mean_std(100 * e["miou"] for e in per_seed.values())
            per_class = [[None if x is None else 100 * x for x in e["per_class_iou"]]
                         for e in per_seed.values()]
            class_mean = []
            for values in zip(*per_class):
                known = [v for v in values if v is not None]
                class_mean.append(sum(known) / len(known) if known else None)
            entry["splits"][split] = dict(
                miou={str(seed): 100 * e["miou"] for seed, e in per_seed.items()},
                miou_mean=mean, miou_std=std, n=len(per_seed), per_class_iou_mean=class_mean)
        entry["wall_seconds"] = {str(seed): r.get("seconds", {}) for seed, r in runs.items()}
        arms[arm_id] = entry
    pairs = []
    for a, b in spec.pairs:
        for split in splits:
            miou_a = arms[a]["splits"].get(split, {}).get("miou", {})
            miou_b = arms[b]["splits"].get(split, {}).get("miou", {})
            seeds = sorted(set(miou_a) & set(miou_b), key=int)
            if not seeds:
                continue
            differences = {seed: miou_a[seed] - miou_b[seed] for seed in seeds}
            mean, std = mean_std(differences.values())
            pairs.append(dict(a=a, b=b, split=split, seeds=[int(s) for s in seeds],
                              differences=differences, mean=mean, std=std,
                              min=min(differences.values()),
                              all_positive=all(d > 0 for d in differences.values())))
    reports = []
    for arm_id, seed in spec.report:
        result = by_arm.get(arm_id, {}).get(seed)
        if result and result.get("pseudo_label_report"):
            reports.append(dict(arm=arm_id, seed=seed, **result["pseudo_label_report"]))
    runs = []
    for arm_id, arm_runs in by_arm.items():
        for seed, r in sorted(arm_runs.items()):
            runs.append(dict(run=f"{arm_id}_seed{seed}", arm=arm_id, seed=seed,
                             steps=r.get("steps"), seconds=r.get("seconds", {}),
                             load_average_at_start=r.get("load_average_at_start"),
                             initialization=_initialization_counts(r.get("initialization")),
                             extra_train_flags=r.get("extra_train_flags", []),
                             train_split=r.get("train_split"),
                             unlabeled_split=r.get("unlabeled_split")))
    return dict(spec=os.path.relpath(os.path.abspath(spec.path), REPO),
                description=spec.description, dataset=spec.dataset.name,
                class_names=list(spec.dataset.class_names), units="mIoU and IoU in points "
                "(100 x fraction); std is the sample standard deviation (ddof=1) over seeds",
                splits=splits, arms=arms, pairs=pairs, pseudo_label_reports=reports,
                runs=runs, ignored_results=ignored)


def _initialization_counts(record):
    if not record:
        return None
    return {k: record[k] for k in ("source", "tf_initial_checkpoint", "loaded", "missing",
                                   "excluded", "unused", "loaded_layers") if k in record}


def _fmt(value, digits=2):
    return "-" if value is None else f"{value:.{digits}f}"


def _pm(mean, std):
    if mean is None:
        return "-"
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def markdown(summary):
    """The summary as markdown tables."""
    lines = [f"# Study {summary['spec']}", "", summary["description"], "",
             f"{summary['units']}.", ""]
    splits = summary["splits"]
    lines += ["| arm | runs | " + " | ".join(f"mIoU {s} (mean ± std)" for s in splits)
              + " | " + " | ".join(f"{s} per seed" for s in splits)
              + " | train wall time per run |",
              "|---|---|" + "---|" * (2 * len(splits) + 1)]
    for arm_id, arm in summary["arms"].items():
        cells = [_pm(arm["splits"][s]["miou_mean"], arm["splits"][s]["miou_std"])
                 if s in arm["splits"] else "-" for s in splits]
        seeds = [", ".join(f"{seed}: {v:.2f}" for seed, v in arm["splits"][s]["miou"].items())
                 if s in arm["splits"] else "-" for s in splits]
        train = [v.get("train") for v in arm["wall_seconds"].values() if v.get("train")]
        wall = "-" if not train else f"{sum(train) / len(train) / 60:.1f} min"
        lines.append(f"| {arm['title']} | {len(arm['seeds'])}/{len(arm['seeds_planned'])} | "
                     + " | ".join(cells) + " | " + " | ".join(seeds) + f" | {wall} |")
    if summary["pairs"]:
        lines += ["", "Seed-paired differences (same seed: same labeled split and training "
                  "seed):", "",
                  "| difference | split | seeds | per seed | mean ± std | min | all > 0 |",
                  "|---|---|---|---|---|---|---|"]
        for p in summary["pairs"]:
            per_seed = ", ".join(f"{s}: {d:+.2f}" for s, d in p["differences"].items())
            lines.append(f"| {p['a']} − {p['b']} | {p['split']} | {len(p['seeds'])} | "
                         f"{per_seed} | {_pm(p['mean'], p['std'])} | {p['min']:+.2f} | "
                         f"{'yes' if p['all_positive'] else 'no'} |")
    names = summary["class_names"]
    for split in splits:
        lines += ["", f"Per-class IoU on {split} (mean over seeds):", "",
                  "| arm | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for arm in summary["arms"].values():
            if split in arm["splits"]:
                lines.append(f"| {arm['title']} | " + " | ".join(
                    _fmt(v, 1) for v in arm["splits"][split]["per_class_iou_mean"]) + " |")
    if summary["pseudo_label_reports"]:
        lines += ["", "Pseudo-label quality on the unlabeled images (scored against their "
                  "masks, which training never reads):", "",
                  "| run | split | source | mIoU | pixel acc. | ECE, T = 1 | ECE, sharpened | "
                  "mean confidence, T = 1 / sharpened |", "|---|---|---|---|---|---|---|---|"]
        for report in summary["pseudo_label_reports"]:
            for source, s in report["sources"].items():
                lines.append(
                    f"| {report['arm']} seed {report['seed']} | {report['split']} | {source} | "
                    f"{100 * s['miou']:.2f} | {100 * s['pixel_accuracy']:.2f} | "
                    f"{100 * s['ece']:.2f} | {100 * s['ece_sharpened']:.2f} "
                    f"(T = {report.get('temperature', '?')}) | "
                    f"{100 * s['mean_confidence']:.1f} / "
                    f"{100 * s['mean_confidence_sharpened']:.1f} |")
    lines += ["", "Runs:", "",
              "| run | steps | train | eval | report | load at start | initial weights "
              "(loaded / missing / excluded / unused) | extra flags |",
              "|---|---|---|---|---|---|---|---|"]
    for r in summary["runs"]:
        seconds = r["seconds"]
        init = r["initialization"]
        if init is None:
            init_text = "not recorded"
        elif init.get("source") == "random":
            init_text = "random"
        else:
            init_text = (f"{init.get('source')}: " + " / ".join(
                str(init.get(k, "-")) for k in ("loaded", "missing", "excluded", "unused")))
        evals = sum(v for k, v in seconds.items() if k.startswith("eval_"))
        lines.append(f"| {r['run']} | {r['steps']} | {_fmt(seconds.get('train'), 0)} s | "
                     f"{evals:.0f} s | {_fmt(seconds.get('report'), 0)} s | "
                     f"{_fmt(r['load_average_at_start'])} | {init_text} | "
                     f"{' '.join(r['extra_train_flags']) or '-'} |")
    return "\n".join(lines) + "\n"


def write_atomically(path, text):
    tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_summary(spec, work_dir):
    """Builds ``summary.json`` and ``summary.md`` from every result file present."""
    results = load_results(os.path.join(work_dir, "results"))
    summary = summarize(spec, results)
    summary["invocations"] = _read_json(os.path.join(work_dir, INVOCATIONS)) or []
    summary["date"] = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    summary["work_dir"] = work_dir
    write_atomically(os.path.join(work_dir, "summary.json"), json.dumps(summary, indent=1))
    text = markdown(summary)
    if summary["invocations"]:
        text += "\nInvocations of the runner:\n\n| started | minutes | runs | parallel | " \
                "failed |\n|---|---|---|---|---|\n" + "".join(
                    f"| {i['started']} | {i['minutes']:.1f} | {' '.join(i['runs'])} | "
                    f"{i['parallel']} | {' '.join(i['failed']) or '-'} |\n"
                    for i in summary["invocations"])
    write_atomically(os.path.join(work_dir, "summary.md"), text)
    return summary, text


# -- execution --------------------------------------------------------------------


class Runner:
    """Executes the steps of a study in ``work_dir`` (see the module docstring)."""

    def __init__(self, spec, work_dir, *, source_dir=None, eval_splits=("val",),
                 extra_train_flags=(), extra_report_flags=(), parallel=1,
                 threads_per_run=None, dry_run=False):
        self.spec = spec
        self.work_dir = os.path.abspath(work_dir)
        self.source_dir = os.path.normpath(
            os.path.join(REPO, source_dir or spec.dataset.source_dir))
        self.records_dir = os.path.join(self.work_dir, "records")
        self.logs_dir = os.path.join(self.work_dir, "logs")
        self.eval_splits = tuple(eval_splits)
        self.extra_train_flags = tuple(extra_train_flags)
        self.extra_report_flags = tuple(extra_report_flags)
        self.parallel = parallel
        cpus = os.cpu_count() or 1
        self.threads_per_run = threads_per_run or max(1, cpus // parallel)
        self.dry_run = dry_run
        self._lock = threading.Lock()

    def log(self, message):
        with self._lock:
            print(f"[{datetime.datetime.now():%H:%M:%S}] {message}", flush=True)

    def command(self, args, log_name, threads=None):
        """Runs ``python args`` in the repo root, output appended to ``logs/<log_name>``;
        returns its wall seconds; raises RuntimeError naming the log on failure."""
        log_path = os.path.join(self.logs_dir, log_name)
        args = [sys.executable, *args]
        self.log(f"$ {' '.join(args[1:])}  > {log_path}")
        if self.dry_run:
            return 0.0
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
        if threads:
            env.update(TF_NUM_INTRAOP_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
        start = time.monotonic()
        with open(log_path, "a") as out:
            out.write(f"\n$ {' '.join(args)}\n")
            out.flush()
            result = subprocess.run(args, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                    env=env)
        seconds = time.monotonic() - start
        if result.returncode:
            raise RuntimeError(f"{' '.join(args[1:3])} failed (exit {result.returncode}) "
                               f"after {seconds:.0f} s; see {log_path}")
        return seconds

    # data ---------------------------------------------------------------------------

    def prepare_data(self):
        """Source copy, partition lists and records, each skipped when present."""
        for path in (self.records_dir, self.logs_dir, os.path.join(self.work_dir, "splits")):
            os.makedirs(path, exist_ok=True)
        dataset = self.spec.dataset
        source = self.source_dir
        if not os.path.isdir(source):
            raise FileNotFoundError(f"dataset source {source} is not a directory "
                                    f"({self.spec.path}: dataset.source_dir, or --source_dir)")
        if dataset.scale != 1.0:
            source = self._resized_source()
        lists = {}
        for partition in self.spec.partitions.values():
            for seed in partition.draw_seeds():
                lists.update(self._partition_lists(partition, seed, source))
        self._convert(source, dataset.train_split,
                      {dataset.train_split: os.path.join(source, f"{dataset.train_split}.txt"),
                       **lists}, class_labels=True)
        for split in dataset.eval_source_splits:
            self._convert(source, split, {split: os.path.join(source, f"{split}.txt")},
                          class_labels=False)

    def _resized_source(self):
        target = os.path.join(self.work_dir, "source")
        for split in (self.spec.dataset.train_split, *self.spec.dataset.eval_source_splits):
            if os.path.exists(os.path.join(target, f"{split}.txt")):
                continue
            self.log(f"resizing {self.source_dir} {split} by {self.spec.dataset.scale} "
                     f"into {target}")
            if not self.dry_run:
                count = resize_split(self.source_dir, target, split, self.spec.dataset.scale)
                self.log(f"  {count} images")
        return target

    def _partition_lists(self, partition, seed, source):
        labeled, unlabeled = partition.split_names(seed)
        splits_dir = os.path.join(self.work_dir, "splits")
        paths = {labeled: os.path.join(splits_dir, f"{labeled}.txt"),
                 unlabeled: os.path.join(splits_dir, f"{unlabeled}.txt")}
        # make_splits writes the unlabeled list last, each atomically.
        if not os.path.exists(paths[unlabeled]):
            train = self.spec.dataset.train_split
            size = (["--num_labeled", str(partition.num_labeled)] if partition.num_labeled
                    else ["--denominator", str(partition.denominator)])
            self.command(["datasets/make_splits.py", f"--list_file={source}/{train}.txt",
                          f"--label_dir={source}/labels/{train}",
                          f"--ignore_label={self.spec.dataset.ignore_label}",
                          f"{size[0]}={size[1]}", f"--seed={seed}",
                          f"--labeled_list={paths[labeled]}",
                          f"--unlabeled_list={paths[unlabeled]}"], "make_splits.log")
        return paths

    def _convert(self, source, source_split, lists, class_labels):
        """Converts the splits of ``lists`` ({split: id list}) that have no records yet,
        all from ``source``'s ``source_split`` folders, in one build_folder.py call."""
        missing = [split for split in lists if not self.has_records(split)]
        if not missing:
            return
        dataset = self.spec.dataset
        first, rest = missing[0], missing[1:]
        args = ["datasets/build_folder.py", f"--image_dir={source}/images/{source_split}",
                f"--label_dir={source}/labels/{source_split}", f"--list_file={lists[first]}",
                f"--split_name={first}", *[f"--split_list={s}={lists[s]}" for s in rest],
                f"--output_dir={self.records_dir}", f"--dataset_name={dataset.name}",
                f"--num_classes={dataset.num_classes}", f"--ignore_label={dataset.ignore_label}",
                f"--class_names={','.join(dataset.class_names)}",
                f"--num_shards={dataset.num_shards}"]
        if class_labels:
            args.append("--class_labels")
        self.command(args, "build_folder.log")

    def has_records(self, split):
        return bool(glob.glob(os.path.join(self.records_dir, f"{split}-*")))

    def check_eval_splits(self):
        missing = [s for s in self.eval_splits if not self.has_records(s)]
        if missing and not self.dry_run:
            raise FileNotFoundError(
                f"--eval_splits: no records for {missing} in {self.records_dir} (expected "
                f"files <split>-*; place converted records there)")

    # runs ---------------------------------------------------------------------------

    def execute(self, run):
        """Trains, evaluates and reports one run; writes and returns its result."""
        if self.dry_run:
            for args in self.commands(run):
                self.log(f"$ {' '.join(args)}")
            return None
        import tensorflow as tf

        logdir = os.path.join(self.work_dir, "runs", run.name)
        steps = int(run.arm.settings["training_number_of_steps"])
        timing_path = os.path.join(logdir, "timing.json")
        timing = _read_json(timing_path) or {}
        load = os.getloadavg()[0]
        latest = tf.train.latest_checkpoint(logdir) if os.path.isdir(logdir) else None
        if latest and int(latest.rsplit("-", 1)[-1]) >= steps:
            self.log(f"{run.name}: trained ({os.path.basename(latest)})")
        else:
            args = train_command(run, self.work_dir, self.records_dir, self.extra_train_flags)
            seconds = self.command(args, f"{run.name}.train.log", self.threads_per_run)
            timing["train"] = timing.get("train", 0.0) + seconds
            timing.setdefault("train_invocations", []).append(
                dict(seconds=round(seconds, 1), load_average_at_start=round(load, 2),
                     parallel=self.parallel, threads=self.threads_per_run,
                     ended=datetime.datetime.now().astimezone().isoformat(timespec="seconds")))
            timing["train_command"] = " ".join(args)
            timing["extra_train_flags"] = list(self.extra_train_flags)
            write_atomically(timing_path, json.dumps(timing, indent=1))
            latest = tf.train.latest_checkpoint(logdir)
            if latest is None or int(latest.rsplit("-", 1)[-1]) < steps:
                raise RuntimeError(f"{run.name}: train.py ended without a checkpoint at step "
                                   f"{steps} in {logdir}")
        result_path = os.path.join(self.work_dir, "results", f"{run.name}.json")
        previous = _read_json(result_path) or {}
        evals = {k: v for k, v in previous.get("eval", {}).items()
                 if v.get("checkpoint") == latest}
        seconds = {k: v for k, v in previous.get("seconds", {}).items() if k != "train"}
        for split in self.eval_splits:
            path = os.path.join(logdir, f"eval_{split}.json")
            evaluated = _read_json(path)
            if evaluated is None or evaluated.get("evaluated") != latest:
                seconds[f"eval_{split}"] = self.command(
                    ["eval.py", f"--checkpoint_dir={logdir}", f"--eval_split={split}",
                     f"--dataset_dir={self.records_dir}", f"--output_json={path}",
                     *self.spec.eval_flags], f"{run.name}.eval.log", self.threads_per_run)
                evaluated = _read_json(path)
            evals[split] = dict(miou=evaluated["miou"], per_class_iou=evaluated["per_class_iou"],
                                pixel_accuracy=evaluated["pixel_accuracy"], checkpoint=latest,
                                eval_crop_size=evaluated.get("eval_crop_size"))
        report = previous.get("pseudo_label_report")
        if report and report.get("checkpoint") != latest:
            report = None
        if (run.arm.id, run.seed) in self.spec.report:
            report_dir = os.path.join(logdir, "pseudo_label_report")
            path = os.path.join(report_dir, f"{run.unlabeled_split}.json")
            full = _read_json(path)
            if full is None or full.get("checkpoint") != latest:
                seconds["report"] = self.command(
                    ["-m", "wss.pseudo_label_report", f"--checkpoint_dir={logdir}",
                     f"--dataset_dir={self.records_dir}", f"--split={run.unlabeled_split}",
                     f"--output_dir={report_dir}", f"--output_json={path}",
                     *self.extra_report_flags], f"{run.name}.report.log", self.threads_per_run)
                full = _read_json(path)
            if full is not None:
                report = dict(split=full["split"], checkpoint=full["checkpoint"],
                              num_images=full["num_images"], cam_labels=full["cam_labels"],
                              temperature=full["settings"]["temperature"],
                              reliability_diagram=full.get("reliability_diagram"),
                              sources={name: {k: s[k] for k in (
                                  "miou", "per_class_iou", "pixel_accuracy", "ece",
                                  "ece_sharpened", "mean_confidence",
                                  "mean_confidence_sharpened", "num_pixels")}
                                  for name, s in full["sources"].items()})
        run_config = _read_json(os.path.join(logdir, "run_config.json")) or {}
        result = dict(
            run=run.name, arm=run.arm.id, seed=run.seed, title=run.arm.title,
            flagfile=run.arm.flagfile, mode=run.arm.mode, partition=run.arm.partition,
            train_split=run.train_split, unlabeled_split=run.unlabeled_split, steps=steps,
            checkpoint=latest, eval=evals, pseudo_label_report=report,
            initialization=run_config.get("initialization"),
            seconds={"train": timing.get("train"), **seconds},
            train_command=timing.get("train_command"),
            train_invocations=timing.get("train_invocations", []),
            extra_train_flags=timing.get("extra_train_flags", []),
            load_average_at_start=(timing["train_invocations"][-1]["load_average_at_start"]
                                   if timing.get("train_invocations") else None),
            last_logged=last_scalars(logdir),
            date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            machine=dict(cpus=os.cpu_count(), platform=platform.platform(),
                         python=platform.python_version(), tensorflow=tf.__version__))
        os.makedirs(os.path.dirname(result_path), exist_ok=True)
        write_atomically(result_path, json.dumps(result, indent=1))
        miou = ", ".join(f"{split} {100 * e['miou']:.2f}" for split, e in evals.items())
        self.log(f"{run.name}: mIoU {miou}")
        return result

    def commands(self, run):
        """The commands of a run (for --dry_run)."""
        logdir = os.path.join(self.work_dir, "runs", run.name)
        commands = [train_command(run, self.work_dir, self.records_dir, self.extra_train_flags)]
        for split in self.eval_splits:
            commands.append(["eval.py", f"--checkpoint_dir={logdir}", f"--eval_split={split}",
                             f"--dataset_dir={self.records_dir}",
                             f"--output_json={logdir}/eval_{split}.json", *self.spec.eval_flags])
        if (run.arm.id, run.seed) in self.spec.report:
            commands.append(["-m", "wss.pseudo_label_report", f"--checkpoint_dir={logdir}",
                             f"--dataset_dir={self.records_dir}",
                             f"--split={run.unlabeled_split}", *self.extra_report_flags])
        return commands

    def execute_all(self, runs):
        """Runs ``runs`` with ``parallel`` workers (PseudoSeg runs first, the longest);
        returns the names of the failed runs."""
        failed = []

        def execute(run):
            try:
                self.execute(run)
            except (RuntimeError, OSError, ValueError, KeyError) as error:
                self.log(f"{run.name} failed: {error!r}")
                with self._lock:
                    failed.append(run.name)

        run_side_by_side(sorted(runs, key=lambda r: r.arm.mode != "pseudoseg"),
                         self.parallel, execute)
        return failed


def run_side_by_side(items, parallel, function):
    """Calls ``function(item)`` for every item, ``parallel`` at a time (worker
    threads taking the items in order); returns when all have returned."""
    jobs = queue.Queue()
    for item in items:
        jobs.put(item)

    def worker():
        while True:
            try:
                item = jobs.get_nowait()
            except queue.Empty:
                return
            function(item)

    threads = [threading.Thread(target=worker) for _ in range(max(1, parallel))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def record_invocation(work_dir, record):
    """Appends ``record`` to ``<work_dir>/invocations.json`` (a list)."""
    path = os.path.join(work_dir, INVOCATIONS)
    write_atomically(path, json.dumps((_read_json(path) or []) + [record], indent=1))


def _read_json(path):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def resize_split(source_dir, target_dir, split, scale):
    """Writes ``target_dir/{images,labels}/<split>/<id>.png`` and ``<split>.txt`` at ``scale``:
    images bilinear (Pillow widens its support when shrinking: antialiased), masks nearest."""
    import numpy as np
    from PIL import Image

    from datasets import conversion, image_io

    ids = conversion.read_id_list(os.path.join(source_dir, f"{split}.txt"))
    image_out = os.path.join(target_dir, "images", split)
    label_out = os.path.join(target_dir, "labels", split)
    os.makedirs(image_out, exist_ok=True)
    os.makedirs(label_out, exist_ok=True)
    for image_id in ids:
        image_path = image_io.find_file(os.path.join(source_dir, "images", split), image_id,
                                        (".jpg", ".jpeg", ".png"))
        image = Image.open(image_path).convert("RGB")
        mask = Image.open(os.path.join(source_dir, "labels", split, f"{image_id}.png"))
        if mask.mode not in ("L", "P"):
            raise ValueError(f"{image_id}: mask mode {mask.mode}, expected single channel")
        size = (round(image.width * scale), round(image.height * scale))
        for picture, path in ((image.resize(size, Image.BILINEAR),
                               os.path.join(image_out, f"{image_id}.png")),
                              (Image.fromarray(np.asarray(mask)).resize(size, Image.NEAREST),
                               os.path.join(label_out, f"{image_id}.png"))):
            picture.save(path + ".tmp.png")
            os.replace(path + ".tmp.png", path)
    conversion.write_id_list(os.path.join(target_dir, f"{split}.txt"), ids)  # last: the marker
    return len(ids)


def last_scalars(logdir):
    """The last logged value of every ``train/*`` scalar of a run."""
    import tensorflow as tf

    values = {}
    for path in sorted(glob.glob(os.path.join(logdir, "train", "events.*"))):
        try:
            for event in tf.compat.v1.train.summary_iterator(path):
                for value in event.summary.value:
                    if value.tag.startswith("train/"):
                        step, _ = values.get(value.tag[6:], (-1, None))
                        if event.step >= step:
                            values[value.tag[6:]] = (
                                event.step, float(tf.make_ndarray(value.tensor)))
        except Exception:  # pylint: disable=broad-except  # a truncated event file
            continue
    return {name: value for name, (_, value) in values.items()}


# -- command line -----------------------------------------------------------------


def _define_flags():
    from absl import flags

    flags.DEFINE_string("spec", None, "Study spec (JSON), e.g. benchmarks/studies/msrc.json.")
    flags.DEFINE_string("work_dir", None,
                        "Where the source copy, splits, records, runs, results, logs and the "
                        "summary go (keep it outside the repository, e.g. /tmp/msrc_study).")
    flags.DEFINE_string("source_dir", None, "Overrides the spec's dataset.source_dir.")
    flags.DEFINE_list("arms", None, "Arm ids to run (default: every arm of the spec).")
    flags.DEFINE_list("seeds", None, "Seeds to run (default: each arm's seeds).")
    flags.DEFINE_list("eval_splits", ["val"],
                      "Splits every run is evaluated on (their records must be in "
                      "<work_dir>/records).")
    flags.DEFINE_multi_string("extra_train_flags", [],
                              "A flag appended to every train.py command, repeated for "
                              "several (e.g. --extra_train_flags=--training_number_of_steps=20 "
                              "--extra_train_flags=--train_crop_size=97,97 for a smoke test; "
                              "use a separate --work_dir for such runs).")
    flags.DEFINE_multi_string("extra_report_flags", [],
                              "A flag appended to the pseudo-label report, repeated for "
                              "several (e.g. --extra_report_flags=--max_images=20).")
    flags.DEFINE_integer("parallel", 1, "Runs trained side by side.")
    flags.DEFINE_integer("threads_per_run", None,
                         "TF_NUM_INTRAOP_THREADS of each run (default: CPUs / --parallel).")
    flags.DEFINE_boolean("summary_only", False,
                         "Only rebuild summary.json and summary.md from the result files.")
    flags.DEFINE_boolean("prepare_only", False,
                         "Only prepare the data (source copy, splits, records).")
    flags.DEFINE_boolean("dry_run", False, "Print the commands instead of running them.")
    flags.mark_flags_as_required(["spec", "work_dir"])


def main(argv):
    from absl import app, flags

    FLAGS = flags.FLAGS
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if FLAGS.parallel < 1:
        raise app.UsageError(f"--parallel must be >= 1, got {FLAGS.parallel}")
    try:
        seeds = None if FLAGS.seeds is None else [int(s) for s in FLAGS.seeds]
    except ValueError:
        raise app.UsageError(f"--seeds must be integers, got {FLAGS.seeds}") from None
    start = time.monotonic()
    work_dir = os.path.abspath(FLAGS.work_dir)
    try:
        spec = load_spec(FLAGS.spec, FLAGS.extra_train_flags)
        runs = plan_runs(spec, FLAGS.arms, seeds)
    except SpecError as error:
        print(f"ERROR: {error}", file=sys.stderr)
        sys.exit(2)
    if FLAGS.summary_only:
        _, text = write_summary(spec, work_dir)
        print(text)
        return
    if not runs:
        raise app.UsageError("--arms/--seeds select no run of the spec")
    os.makedirs(work_dir, exist_ok=True)
    runner = Runner(spec, work_dir, source_dir=FLAGS.source_dir, eval_splits=FLAGS.eval_splits,
                    extra_train_flags=FLAGS.extra_train_flags,
                    extra_report_flags=FLAGS.extra_report_flags, parallel=FLAGS.parallel,
                    threads_per_run=FLAGS.threads_per_run, dry_run=FLAGS.dry_run)
    runner.log(f"study {spec.path} in {work_dir}: {len(runs)} runs "
               f"({', '.join(r.name for r in runs)}), {FLAGS.parallel} at a time with "
               f"{runner.threads_per_run} intra-op threads each; load average "
               f"{os.getloadavg()[0]:.2f}")
    try:
        runner.prepare_data()
        runner.check_eval_splits()
    except (RuntimeError, OSError, ValueError) as error:
        print(f"ERROR: {error}", file=sys.stderr)
        sys.exit(1)
    if FLAGS.prepare_only:
        runner.log(f"data ready in {runner.records_dir}")
        return
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    failed = runner.execute_all(runs)
    if FLAGS.dry_run:
        return
    record_invocation(work_dir, dict(
        started=started, minutes=(time.monotonic() - start) / 60,
        runs=[r.name for r in runs], parallel=FLAGS.parallel,
        threads_per_run=runner.threads_per_run, eval_splits=list(FLAGS.eval_splits),
        extra_train_flags=list(FLAGS.extra_train_flags), failed=failed,
        load_average_at_end=round(os.getloadavg()[0], 2)))
    _, text = write_summary(spec, work_dir)
    print()
    print(text)
    runner.log(f"wrote {work_dir}/summary.json and summary.md; this invocation took "
               f"{(time.monotonic() - start) / 60:.1f} min")
    if failed:
        runner.log(f"failed runs: {', '.join(failed)}")
        sys.exit(1)


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
