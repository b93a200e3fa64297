"""Plans a study's runs: which arm trains with which seed on which splits, under
which name, the ``train.py`` command of each, and which runs duplicate an
earlier run's training (``find_duplicates``)."""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

from benchmarks.study_runner.spec import ALL, ArmSpec, SpecError, run_name


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run of an arm: training seed ``seed`` on the labeled split of
    partition draw ``draw`` (None for the whole training split)."""
    arm: ArmSpec
    seed: int
    train_split: str
    unlabeled_split: Optional[str]
    draw: Optional[int] = None

    @property
    def name(self) -> str:
        """``<arm>_seed<s>``, or ``<arm>_draw<d>_seed<s>`` for an arm with a fixed ``draw``."""
        return run_name(self.arm.id, self.seed, self.arm.draw)


def plan_runs(spec, arms=None, seeds=None):
    """The runs of ``arms`` (default all) restricted to training ``seeds``, in spec order."""
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
                train_split, unlabeled, draw = spec.dataset.train_split, None, None
            else:
                partition = spec.partitions[arm.partition]
                draw = arm.draw if arm.draw is not None else partition.draw_seed(seed)
                train_split, unlabeled = partition.split_names(draw)
                if arm.mode != "pseudoseg":
                    unlabeled = None
            runs.append(Run(arm, seed, train_split, unlabeled, draw))
    return runs


def run_dir(work_dir, run):
    """The run's ``--train_logdir``."""
    return os.path.join(work_dir, "runs", run.name)


def train_command(run, work_dir, records_dir, extra_train_flags=(), save_interval_steps=0):
    """The ``train.py`` argument list of a run (without the interpreter)."""
    args = ["train.py", f"--flagfile={run.arm.flagfile}",
            f"--train_logdir={run_dir(work_dir, run)}",
            f"--dataset_dir={records_dir}", f"--seed={run.seed}",
            f"--train_split={run.train_split}"]
    if run.unlabeled_split:
        args.append(f"--train_split_cls={run.unlabeled_split}")
    if run.arm.curve_every_steps:
        args.append(f"--keep_checkpoint_steps={run.arm.curve_every_steps}")
    if save_interval_steps:
        args.append(f"--save_interval_steps={save_interval_steps}")
    return args + list(extra_train_flags)


def training_arguments(command):
    """A ``train.py`` command's arguments but ``--train_logdir`` and
    ``--dataset_dir``: where the run writes and where the records are, which
    differ between work dirs (the records are a function of the spec) while the
    training does not. Two commands with the same are the same training."""
    return tuple(arg for arg in command
                 if not arg.startswith(("--train_logdir=", "--dataset_dir=")))


def find_duplicates(runs, identity):
    """``{name of a duplicate run: its canonical Run}``: the runs whose
    ``identity(run)`` equals that of an earlier run of ``runs``; the canonical
    run is the first of them (in spec order, the run of the arm listed first)."""
    first = {}
    duplicates = {}
    for run in runs:
        canonical = first.setdefault(identity(run), run)
        if canonical is not run:
            duplicates[run.name] = canonical
    return duplicates
