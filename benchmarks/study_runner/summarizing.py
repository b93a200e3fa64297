"""Summarises a study's per-run results: mean and spread over seeds, seed-paired
differences, bootstrap intervals over the evaluated images, learning curves.

Inputs are the result files ``<work_dir>/results/<run>.json`` (any number of
them, from any number of invocations) and the per-image confusion matrices
they point to (``results/per_image/<run>.<split>.npz``). mIoU and IoU are in
points (100 x fraction) in the summary.

Bootstrap intervals (percentile method, 95%): for a split with N evaluated
images, ``np.random.default_rng(BOOTSTRAP_SEED).integers(0, N, (BOOTSTRAP_SAMPLES, N))``
draws the resamples (image indices with replacement, images in the order of
their sorted ids); a resample's mIoU is that of the sum of its images'
confusion matrices (``core.metrics.iou_from_confusion``'s convention: classes
with an empty union left out). Every run, arm mean and difference on a split
uses the same resamples, so an arm mean's interval is that of the per-resample
mean over its seeds, and a difference's is that of the per-resample
difference (mean over seeds): image sampling noise only, training seeds fixed.
"""

from __future__ import annotations

import glob
import json
import math
import os

import numpy as np

from benchmarks.study_runner.common import REPO

BOOTSTRAP_SAMPLES = 1000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95


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


# -- bootstrap ----------------------------------------------------------------------


def miou_of_confusions(confusions):
    """mIoU (fraction) of each ``[..., C, C]`` confusion matrix: the mean IoU of the
    classes whose union is not empty (0 when none is)."""
    confusions = np.asarray(confusions, np.float64)
    tp = np.diagonal(confusions, axis1=-2, axis2=-1)
    union = confusions.sum(-1) + confusions.sum(-2) - tp
    present = union > 0
    iou = np.where(present, tp / np.where(present, union, 1), 0.0)
    count = present.sum(-1)
    return np.where(count > 0, iou.sum(-1) / np.maximum(count, 1), 0.0)


def resample_counts(num_images, samples=BOOTSTRAP_SAMPLES, seed=BOOTSTRAP_SEED):
    """``[samples, num_images]``: how often each image occurs in each resample."""
    indices = np.random.default_rng(seed).integers(0, num_images, (samples, num_images))
    rows = np.arange(samples)[:, None] * num_images
    return np.bincount((indices + rows).ravel(), minlength=samples * num_images).reshape(
        samples, num_images)


def interval(values, confidence=CONFIDENCE):
    """``[low, high]``: the percentile interval of bootstrap ``values``."""
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(np.asarray(values, np.float64), [tail, 100 - tail])
    return [float(low), float(high)]


class Bootstrap:
    """Resampled mIoU (points) of each run on each split, with shared resamples
    per split (see the module docstring); ``None`` where a run has no per-image
    file, or its images differ from the split's first run's."""

    def __init__(self, results_dir, samples=BOOTSTRAP_SAMPLES, seed=BOOTSTRAP_SEED):
        self.results_dir = results_dir
        self.samples = samples
        self.seed = seed
        self._ids = {}  # split -> sorted image ids of the first run read
        self._counts = {}  # number of images -> resample counts
        self._mious = {}  # (run, split) -> [samples] or None
        self.problems = []

    def run_miou(self, name, result, split):
        key = (name, split)
        if key not in self._mious:
            self._mious[key] = self._compute(name, result, split)
        return self._mious[key]

    def _compute(self, name, result, split):
        from core.evaluation import read_per_image_confusion

        entry = result["eval"].get(split, {})
        relative = entry.get("per_image_confusion")
        if not relative or self.results_dir is None:
            return None
        path = os.path.join(self.results_dir, relative)
        if not os.path.exists(path):
            self.problems.append(f"{name} {split}: {path} is missing")
            return None
        data = read_per_image_confusion(path)
        if entry.get("checkpoint") and data.get("evaluated") not in (None, entry["checkpoint"]):
            self.problems.append(f"{name} {split}: {path} is of {data['evaluated']}, the "
                                 f"result of {entry['checkpoint']}")
            return None
        order = np.argsort(data["image_ids"])
        ids = tuple(data["image_ids"][i] for i in order)
        expected = self._ids.setdefault(split, ids)
        if ids != expected:
            self.problems.append(f"{name} {split}: its {len(ids)} images differ from the "
                                 f"other runs' {len(expected)}; no interval")
            return None
        confusion = data["confusion"][order].reshape(len(ids), -1).astype(np.float64)
        counts = self._counts.get(len(ids))
        if counts is None:
            counts = self._counts[len(ids)] = resample_counts(len(ids), self.samples, self.seed)
        classes = data["confusion"].shape[-1]
        resampled = (counts @ confusion).reshape(self.samples, classes, classes)
        return 100 * miou_of_confusions(resampled)

    def mean_interval(self, named_results, split):
        """The interval of the mean over ``[(name, result), ...]`` (None unless
        every run has resamples)."""
        values = [self.run_miou(name, result, split) for name, result in named_results]
        if not values or any(v is None for v in values):
            return None
        return interval(np.mean(values, axis=0))


# -- summary ------------------------------------------------------------------------


def _draw(result):
    return result.get("draw")


def _curve_summary(runs, steps_planned):
    """Per split: the steps, per-seed values, mean over the seeds present at each
    step, and the change over the last quarter of training (final minus the
    first point at or after 3/4 of the steps; the range of the points there)."""
    curves = {seed: r.get("curve") for seed, r in runs.items() if r.get("curve")}
    if not curves:
        return None
    splits = sorted({s for c in curves.values() for point in c for s in point["miou"]},
                    key=lambda s: (s != "val", s))
    summary = {}
    for split in splits:
        steps = sorted({p["step"] for c in curves.values() for p in c if split in p["miou"]})
        per_seed = {}
        quarter = {}
        for seed, curve in curves.items():
            values = {p["step"]: 100 * p["miou"][split] for p in curve if split in p["miou"]}
            per_seed[str(seed)] = [values.get(step) for step in steps]
            if not values:
                continue
            final = max(values)
            tail = [step for step in sorted(values) if step >= 0.75 * final]
            if len(tail) >= 2:
                quarter[str(seed)] = dict(
                    from_step=tail[0], to_step=final,
                    change=values[final] - values[tail[0]],
                    range=max(values[s] for s in tail) - min(values[s] for s in tail))
        mean = []
        for index in range(len(steps)):
            known = [v[index] for v in per_seed.values() if v[index] is not None]
            mean.append(sum(known) / len(known) if known else None)
        summary[split] = dict(
            steps=steps, per_seed=per_seed, mean=mean, last_quarter=quarter,
            last_quarter_change_mean=mean_std(q["change"] for q in quarter.values())[0],
            steps_planned=steps_planned)
    return summary


def summarize(spec, results, results_dir=None):
    """The study summary from per-run results (mIoU in points: 100 x fraction).

    Per arm and evaluated split: mean and sample standard deviation over the
    seeds present, the per-seed values and the mean per-class IoU; per pair
    (A, B) and split: the differences A - B on the runs both arms have with
    the same training seed and labeled draw (an arm on the whole training
    split pairs by seed), their mean, standard deviation, minimum and whether
    every one is positive. With ``results_dir`` (the per-image files), 95%
    bootstrap intervals over images of every run's mIoU, arm mean and
    difference (``*_ci``); learning curves of arms that have them.
    """
    bootstrap = Bootstrap(results_dir)
    by_arm = {}
    names = {}
    ignored = []
    for name, result in sorted(results.items()):
        if result["arm"] not in spec.arms:
            ignored.append(name)
            continue
        by_arm.setdefault(result["arm"], {})[int(result["seed"])] = result
        names[(result["arm"], int(result["seed"]))] = name
    splits = sorted({split for r in results.values() for split in r["eval"]},
                    key=lambda s: (s != "val", s))
    arms = {}
    for arm_id, arm in spec.arms.items():
        runs = by_arm.get(arm_id, {})
        entry = dict(title=arm.title, flagfile=arm.flagfile, partition=arm.partition,
                     mode=arm.mode, draw=arm.draw, seeds_planned=list(arm.seeds),
                     seeds=sorted(runs), splits={})
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
            cis = {}
            for seed in per_seed:
                values = bootstrap.run_miou(names[(arm_id, seed)], runs[seed], split)
                cis[str(seed)] = None if values is None else interval(values)
            entry["splits"][split] = dict(
                miou={str(seed): 100 * e["miou"] for seed, e in per_seed.items()},
                miou_ci=cis, miou_mean=mean, miou_std=std, n=len(per_seed),
                miou_mean_ci=bootstrap.mean_interval(
                    [(names[(arm_id, seed)], runs[seed]) for seed in per_seed], split),
                per_class_iou_mean=class_mean)
        entry["wall_seconds"] = {str(seed): r.get("seconds", {}) for seed, r in runs.items()}
        entry["curve"] = _curve_summary(runs, arm.steps)
        arms[arm_id] = entry
    pairs = []
    for a, b in spec.pairs:
        for split in splits:
            miou_a = arms[a]["splits"].get(split, {}).get("miou", {})
            miou_b = arms[b]["splits"].get(split, {}).get("miou", {})
            seeds, unmatched, draws = [], [], {}
            for seed in sorted(set(miou_a) & set(miou_b), key=int):
                draw_a = _draw(by_arm[a][int(seed)])
                draw_b = _draw(by_arm[b][int(seed)])
                if draw_a is None or draw_b is None or draw_a == draw_b:
                    seeds.append(seed)
                    draws[seed] = draw_a if draw_a is not None else draw_b
                else:
                    unmatched.append(seed)
            if not seeds:
                continue
            differences = {seed: miou_a[seed] - miou_b[seed] for seed in seeds}
            mean, std = mean_std(differences.values())
            resampled = {}
            for seed in seeds:
                values = [bootstrap.run_miou(names[(arm, int(seed))], by_arm[arm][int(seed)],
                                             split) for arm in (a, b)]
                resampled[seed] = None if any(v is None for v in values) else (
                    values[0] - values[1])
            complete = all(v is not None for v in resampled.values())
            pairs.append(dict(
                a=a, b=b, split=split, seeds=[int(s) for s in seeds],
                draws=draws, unpaired_seeds=[int(s) for s in unmatched],
                differences=differences,
                differences_ci={s: None if v is None else interval(v)
                                for s, v in resampled.items()},
                mean=mean, std=std,
                mean_ci=interval(np.mean(list(resampled.values()), axis=0)) if complete
                else None,
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
            runs.append(dict(run=names[(arm_id, seed)], arm=arm_id, seed=seed, draw=_draw(r),
                             alias_of=r.get("alias_of"),
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
                bootstrap=dict(samples=bootstrap.samples, seed=bootstrap.seed,
                               confidence=CONFIDENCE, method="percentile; images resampled "
                               "with replacement, the same resamples for every run of a "
                               "split", problems=bootstrap.problems),
                splits=splits, arms=arms, pairs=pairs, curves=list(spec.curves),
                pseudo_label_reports=reports, runs=runs, ignored_results=ignored)


def _initialization_counts(record):
    if not record:
        return None
    return {k: record[k] for k in ("source", "tf_initial_checkpoint", "loaded", "missing",
                                   "excluded", "unused", "loaded_layers") if k in record}
