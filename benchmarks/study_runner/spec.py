"""Reads and validates a study spec (JSON) and the train.py flagfiles its arms name.

``load_spec`` returns a ``Spec``; every problem raises ``SpecError`` naming
the spec file and the field (``arms[2] (W).flagfile: ...``). The fields are
listed in ``load_spec``'s docstring and in the package docstring.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Optional

from benchmarks.study_runner.common import REPO

ALL = "all"  # partition of arms that train on the whole training split
MIN_CURVE_POINTS = 6  # a learning curve has at least this many evaluated checkpoints


class SpecError(ValueError):
    """A study spec or one of its flagfiles is wrong; the message names the file and field."""


def run_name(arm_id, seed, draw=None):
    """``<arm>_seed<s>``, or ``<arm>_draw<d>_seed<s>`` for an arm with a fixed ``draw``."""
    return f"{arm_id}_seed{seed}" if draw is None else f"{arm_id}_draw{draw}_seed{seed}"



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
    """One row of the study: a flagfile trained with each seed on a partition.

    ``draw``: None (seed s trains on the partition's draw s, or its fixed
    draw) or one draw of the partition that every seed of the arm trains on
    (the seeds then vary the training seed only). ``curve_every_steps``: keep
    and evaluate a checkpoint at every multiple of it (0: no learning curve).
    """
    id: str
    title: str
    flagfile: str
    partition: str
    seeds: tuple
    settings: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)
    draw: Optional[int] = None
    curve_every_steps: int = 0

    @property
    def mode(self) -> str:
        return self.settings["mode"]

    @property
    def steps(self) -> int:
        return int(self.settings["training_number_of_steps"])

    @property
    def curve_steps(self) -> tuple:
        """The steps whose kept checkpoints make the learning curve before the
        final one (every multiple of ``curve_every_steps`` below ``steps``)."""
        if not self.curve_every_steps:
            return ()
        return tuple(range(self.curve_every_steps, self.steps, self.curve_every_steps))


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
    curves: tuple = ()  # arm ids drawn in learning_curves.png
    save_interval_steps: int = 0  # train.py --save_interval_steps (0: the flagfile's)


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


def _non_negative(path, raw, key, where):
    value = _get(path, raw, key, int, where, 0)
    if value < 0:
        _fail(path, f"{where}.{key}" if where else key, f"expected an integer >= 0, got {value}")
    return value


def load_spec(path, extra_train_flags=(), curve_every_steps=None):
    """Reads and validates a study spec; raises SpecError naming the file and field.

    ``extra_train_flags`` (``--flag=value`` strings) override the flagfiles'
    values; ``curve_every_steps`` (not None) overrides the spec's top-level and
    per-arm values (0: no learning curves).

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
    * ``curve_every_steps`` (optional, 0): every arm keeps a checkpoint at
      every multiple of N steps (``train.py --keep_checkpoint_steps=N``), each
      evaluated on every eval split for the learning curve; an arm may set
      its own (0: none). Each curve must have at least 6 points
      (``training_number_of_steps // N >= 6``).
    * ``curves`` (optional): arm ids drawn in ``learning_curves.png``.
    * ``save_interval_steps`` (optional): ``train.py --save_interval_steps``
      for every run (a killed run loses at most that many steps).
    * Arm field ``draw`` (optional): the partition draw every seed of the arm
      trains on, so the seeds vary the training seed only; its runs are named
      ``<arm>_draw<d>_seed<s>``.
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
                            "eval_flags", "curve_every_steps", "curves",
                            "save_interval_steps"), "")
    default_curve = (_non_negative(path, raw, "curve_every_steps", "")
                     if curve_every_steps is None else curve_every_steps)
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
        arm = _load_arm(path, index, body, dataset, partitions, extra, default_curve,
                        curve_every_steps)
        if arm.id in arms:
            _fail(path, f"arms[{index}].id", f"{arm.id!r} is used twice")
        arms[arm.id] = arm
    names = {}
    for arm in arms.values():
        for seed in arm.seeds:
            name = run_name(arm.id, seed, arm.draw)
            if name in names:
                _fail(path, "arms", f"arms {names[name]} and {arm.id} both name a run {name}; "
                                    f"rename one")
            names[name] = arm.id
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
    curves = _get(path, raw, "curves", list, "", [])
    for index, arm_id in enumerate(curves):
        if arm_id not in arms:
            _fail(path, f"curves[{index}]", f"unknown arm {arm_id!r}; arms: {list(arms)}")
        if not arms[arm_id].curve_every_steps:
            _fail(path, f"curves[{index}]", f"arm {arm_id} keeps no checkpoints for a curve "
                                            f"(set curve_every_steps)")
    return Spec(path=path, description=_get(path, raw, "description", str, "", ""),
                dataset=dataset, partitions=partitions, arms=arms, pairs=tuple(pairs),
                report=tuple(report), eval_flags=tuple(eval_flags), curves=tuple(curves),
                save_interval_steps=_non_negative(path, raw, "save_interval_steps", ""))


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


def _load_arm(path, index, raw, dataset, partitions, extra, default_curve=0,
              curve_override=None):
    where = f"arms[{index}]"
    if not isinstance(raw, dict):
        _fail(path, where, f"expected an object, got {raw!r}")
    _check_keys(path, raw, ("id", "title", "flagfile", "partition", "seeds", "draw",
                            "curve_every_steps"), where)
    arm_id = _get(path, raw, "id", str, where)
    if not re.fullmatch(r"[A-Za-z0-9_]+", arm_id):
        _fail(path, f"{where}.id", f"letters, digits and _ only, got {arm_id!r}")
    where = f"arms[{index}] ({arm_id})"
    flagfile = _get(path, raw, "flagfile", str, where)
    partition = _get(path, raw, "partition", str, where)
    seeds = _seed_list(path, raw.get("seeds"), f"{where}.seeds")
    draw = _get(path, raw, "draw", int, where, None)
    if draw is not None and partition == ALL:
        _fail(path, f"{where}.draw", f"partition {ALL!r} has no draws")
    if partition != ALL:
        if partition not in partitions:
            _fail(path, f"{where}.partition", f"unknown partition {partition!r}; known: "
                                              f"{[ALL, *partitions]}")
        part = partitions[partition]
        if draw is not None:
            if draw not in part.draw_seeds():
                _fail(path, f"{where}.draw", f"partition {partition!r} has no draw {draw} "
                                             f"(its draws: {list(part.draw_seeds())})")
        elif part.seeds is not None and set(seeds) - set(part.seeds):
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
    curve_every_steps = (_non_negative(path, raw, "curve_every_steps", where)
                         if "curve_every_steps" in raw and curve_override is None
                         else default_curve)
    steps = int(settings["training_number_of_steps"])
    if curve_every_steps and steps // curve_every_steps < MIN_CURVE_POINTS:
        field = ("--curve_every_steps" if curve_override is not None else
                 f"{where}.curve_every_steps" if "curve_every_steps" in raw
                 else "curve_every_steps")
        _fail(path, field, f"{curve_every_steps} gives arm {arm_id} "
                           f"{steps // curve_every_steps} curve points in its {steps} steps; "
                           f"at least {MIN_CURVE_POINTS} are needed (at most "
                           f"{steps // MIN_CURVE_POINTS})")
    return ArmSpec(id=arm_id, title=_get(path, raw, "title", str, where, arm_id),
                   flagfile=flagfile, partition=partition, seeds=seeds, settings=settings,
                   draw=draw, curve_every_steps=curve_every_steps)


