"""Executes a study in its work dir, each step skipped when its output exists:
data preparation (source copy, partition lists, records), training (resumed
from the run's last checkpoint), evaluation of the final checkpoint (with
per-image confusion matrices) and of the kept checkpoints (learning curve),
the pseudo-label report, and the run's result file ``results/<run>.json``;
a run whose training duplicates an earlier run's (``Runner.schedule``) gets
a copy of that run's result instead (``Runner.fill_alias``).
Also the worker pool ``run_side_by_side`` (used by ``benchmarks/demo_seeds.py``)."""

from __future__ import annotations

import dataclasses
import datetime
import fcntl
import glob
import json
import os
import platform
import queue
import shutil
import subprocess
import sys
import threading
import time

from benchmarks.study_runner.common import REPO, local_time, read_json, write_atomically
from benchmarks.study_runner.planning import (find_duplicates, plan_runs, run_dir,
                                              train_command, training_arguments)
from benchmarks.study_runner.rendering import INVOCATIONS

PER_IMAGE_DIR = "per_image"  # results/per_image/<run>.<split>.npz
CURVE_DIR = "curve"  # runs/<run>/curve/eval_<split>_<step>.json


class RunLocked(RuntimeError):
    """Another process (a runner, or a command a killed runner left behind) is at
    work on the run."""


class CommandFailed(RuntimeError):
    """A command of the runner exited with an error; ``seconds`` is how long it ran."""

    def __init__(self, message, seconds):
        super().__init__(message)
        self.seconds = seconds


@dataclasses.dataclass
class Schedule:
    """What an invocation does with its runs: ``runs`` are executed (trained unless
    trained, evaluated, ...), in order; each ``(alias, canonical)`` of ``aliases``
    then gets a copy of the canonical run's result. ``added`` names the canonical
    runs that are in ``runs`` only for their aliases (not selected by
    ``--arms``/``--seeds``); ``kept`` the duplicates executed as runs of their own
    because they have a result of their own."""
    runs: list
    aliases: list
    added: list
    kept: list


class Runner:
    """Executes the steps of a study in ``work_dir`` (see the package docstring)."""

    def __init__(self, spec, work_dir, *, source_dir=None, eval_splits=("val",),
                 extra_train_flags=(), extra_report_flags=(), parallel=1,
                 threads_per_run=None, dry_run=False):
        self.spec = spec
        self.work_dir = os.path.abspath(work_dir)
        self.source_dir = os.path.normpath(
            os.path.join(REPO, source_dir or spec.dataset.source_dir))
        self.records_dir = os.path.join(self.work_dir, "records")
        self.results_dir = os.path.join(self.work_dir, "results")
        self.logs_dir = os.path.join(self.work_dir, "logs")
        self.eval_splits = tuple(eval_splits)
        self.extra_train_flags = tuple(extra_train_flags)
        self.extra_report_flags = tuple(extra_report_flags)
        self.parallel = parallel
        cpus = os.cpu_count() or 1
        self.threads_per_run = threads_per_run or max(1, cpus // parallel)
        self.dry_run = dry_run
        self._lock = threading.Lock()
        self._held = threading.local()  # the run lock of this worker thread
        # Duplicates among every run of the spec (not only this invocation's), so
        # that an invocation of a duplicate's arm alone finds its canonical run.
        every_run = plan_runs(spec)
        self.canonical_of = find_duplicates(every_run, self.training_identity)
        self.aliases_of = {}  # canonical run name -> [its duplicate Runs]
        for run in every_run:
            if run.name in self.canonical_of:
                self.aliases_of.setdefault(self.canonical_of[run.name].name, []).append(run)

    def log(self, message):
        with self._lock:
            print(f"[{datetime.datetime.now():%H:%M:%S}] {message}", flush=True)

    def command(self, args, log_name, threads=None):
        """Runs ``python args`` in the repo root, output appended to ``logs/<log_name>``;
        returns its wall seconds; raises CommandFailed naming the log on failure."""
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
            # The command inherits the run's lock: held until it ends, even if the
            # runner is killed first.
            held = getattr(self._held, "fd", None)
            result = subprocess.run(args, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                    env=env, pass_fds=() if held is None else (held,))
        seconds = time.monotonic() - start
        if result.returncode:
            raise CommandFailed(f"{' '.join(args[1:3])} failed (exit {result.returncode}) "
                                f"after {seconds:.0f} s; see {log_path}", seconds)
        return seconds

    # data ---------------------------------------------------------------------------

    def source_eval_splits(self):
        """The spec's ``eval_source_splits`` and every split of ``--eval_splits`` the
        source folder has (``<split>.txt``) but the records do not, e.g. a test
        split evaluated by a later invocation."""
        splits = list(self.spec.dataset.eval_source_splits)
        for split in self.eval_splits:
            if (split not in splits and split != self.spec.dataset.train_split
                    and not self.has_records(split)
                    and os.path.exists(os.path.join(self.source_dir, f"{split}.txt"))):
                splits.append(split)
        return splits

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
        for split in self.source_eval_splits():
            self._convert(source, split, {split: os.path.join(source, f"{split}.txt")},
                          class_labels=False)

    def _resized_source(self):
        target = os.path.join(self.work_dir, "source")
        for split in (self.spec.dataset.train_split, *self.source_eval_splits()):
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
        """Trains, evaluates and reports one run; writes and returns its result.

        Nothing of a run is deleted: an interrupted training resumes from its
        last checkpoint, and evaluations whose output matches the checkpoint
        are not repeated."""
        if self.dry_run:
            for args in self.commands(run):
                self.log(f"$ {' '.join(args)}")
            return None
        os.makedirs(os.path.join(self.work_dir, "runs"), exist_ok=True)
        lock_path = run_dir(self.work_dir, run) + ".lock"
        with open(lock_path, "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunLocked(f"{run.name}: another process holds {lock_path} (a runner, or "
                                f"a train.py or eval.py of a killed one, is at work on this "
                                f"run); left alone") from None
            self._held.fd = lock.fileno()
            try:
                return self._execute(run)
            finally:
                self._held.fd = None

    def _execute(self, run):
        logdir = run_dir(self.work_dir, run)
        result_path = os.path.join(self.results_dir, f"{run.name}.json")
        previous = read_json(result_path) or {}
        if not os.path.isdir(logdir) and self.finished_elsewhere(run, previous):
            self.log(f"{run.name}: finished in another session or work dir (its result in "
                     f"{result_path} is complete, and {logdir} does not exist): not retrained")
            return previous
        timing_path = os.path.join(logdir, "timing.json")
        timing = read_json(timing_path) or {}
        latest = self._train(run, logdir, timing, timing_path)
        seconds = {k: v for k, v in previous.get("seconds", {}).items() if k != "train"}
        evals = self._evaluate(run, logdir, latest, previous, seconds)
        curve = self._curve(run, logdir, evals, previous, seconds)
        report = self._report(run, logdir, latest, previous, seconds)
        import tensorflow as tf

        run_config = read_json(os.path.join(logdir, "run_config.json")) or {}
        result = dict(
            run=run.name, arm=run.arm.id, seed=run.seed, draw=run.draw, title=run.arm.title,
            flagfile=run.arm.flagfile, mode=run.arm.mode, partition=run.arm.partition,
            train_split=run.train_split, unlabeled_split=run.unlabeled_split,
            steps=run.arm.steps, checkpoint=latest, eval=evals, curve=curve,
            pseudo_label_report=report, initialization=run_config.get("initialization"),
            seconds={"train": timing.get("train"), **seconds},
            train_command=timing.get("train_command"),
            train_invocations=timing.get("train_invocations", []),
            extra_train_flags=timing.get("extra_train_flags", []),
            load_average_at_start=(timing["train_invocations"][-1]["load_average_at_start"]
                                   if timing.get("train_invocations") else None),
            last_logged=last_scalars(logdir),
            date=local_time(),
            machine=dict(cpus=os.cpu_count(), platform=platform.platform(),
                         python=platform.python_version(), tensorflow=tf.__version__))
        os.makedirs(self.results_dir, exist_ok=True)
        write_atomically(result_path, json.dumps(result, indent=1))
        miou = ", ".join(f"{split} {100 * e['miou']:.2f}" for split, e in evals.items())
        self.log(f"{run.name}: mIoU {miou}")
        return result

    def finished_elsewhere(self, run, result):
        """Whether ``result`` (the run's ``results/<run>.json``) is complete for this
        invocation although the run's logdir is absent, e.g. a part of the study run
        in an earlier session whose ``results/`` was copied in: the run's own result
        (not an alias's copy), trained to its final step by the same ``train.py``
        command but for ``--train_logdir`` and ``--dataset_dir`` (the work dir may
        differ; the records are a function of the spec), evaluated on every eval
        split with its per-image matrices present, its curve complete, and its
        pseudo-label report present when the spec asks for one."""
        if not result or "alias_of" in result or not result.get("checkpoint"):
            return False
        if int(result["checkpoint"].rsplit("-", 1)[-1]) < run.arm.steps:
            return False
        if training_arguments((result.get("train_command") or "").split()) != (
                training_arguments(self.train_command(run))):
            return False
        for split in self.eval_splits:
            entry = result.get("eval", {}).get(split)
            if entry is None or not os.path.exists(
                    os.path.join(self.results_dir, entry["per_image_confusion"])):
                return False
        if run.arm.curve_every_steps:
            steps = {p["step"] for p in result.get("curve") or []
                     if set(self.eval_splits) <= set(p["miou"])}
            wanted = {*run.arm.curve_steps, run.arm.steps}
            if not wanted <= steps:
                return False
        return not self.reported(run) or bool(result.get("pseudo_label_report"))

    def _train(self, run, logdir, timing, timing_path):
        """Trains (or resumes) the run unless its last checkpoint is at the final
        step; records the wall time of each train.py invocation, failed ones
        included, in ``<run>/timing.json``; returns the final checkpoint."""
        import tensorflow as tf

        steps = run.arm.steps
        latest = tf.train.latest_checkpoint(logdir) if os.path.isdir(logdir) else None
        if latest and int(latest.rsplit("-", 1)[-1]) >= steps:
            self.log(f"{run.name}: trained ({os.path.basename(latest)})")
            return latest
        if latest:
            self.log(f"{run.name}: resuming from {os.path.basename(latest)}")
        log_name = f"{run.name}.train.log"
        self._count_killed_invocations(timing, os.path.join(self.logs_dir, log_name))
        args = self.train_command(run)
        os.makedirs(logdir, exist_ok=True)
        # Marked running until it ends: a runner killed meanwhile (a session's end)
        # leaves the mark, and the next invocation counts the killed one's time.
        invocation = dict(started=local_time(),
                          load_average_at_start=round(os.getloadavg()[0], 2),
                          parallel=self.parallel, threads=self.threads_per_run,
                          resumed_from=os.path.basename(latest) if latest else None,
                          running=True)
        timing.setdefault("train_invocations", []).append(invocation)
        timing["train_command"] = " ".join(args)
        timing["extra_train_flags"] = list(self.extra_train_flags)
        write_atomically(timing_path, json.dumps(timing, indent=1))
        failure = None
        try:
            seconds = self.command(args, log_name, self.threads_per_run)
        except CommandFailed as error:
            failure, seconds = error, error.seconds
        del invocation["running"]
        invocation.update(seconds=round(seconds, 1), failed=failure is not None, ended=local_time())
        timing["train"] = timing.get("train", 0.0) + seconds
        write_atomically(timing_path, json.dumps(timing, indent=1))
        if failure is not None:
            raise failure
        latest = tf.train.latest_checkpoint(logdir)
        if latest is None or int(latest.rsplit("-", 1)[-1]) < steps:
            raise RuntimeError(f"{run.name}: train.py ended without a checkpoint at step "
                               f"{steps} in {logdir}")
        return latest

    @staticmethod
    def _count_killed_invocations(timing, log_path):
        """Counts each train.py invocation still marked running (killed with its
        runner: the caller holds the run's lock, so none is at work) in the run's
        train time, from its start to the last write to the run's train log."""
        for invocation in timing.get("train_invocations", []):
            if not invocation.pop("running", False):
                continue
            started = datetime.datetime.fromisoformat(invocation["started"]).timestamp()
            last_write = os.path.getmtime(log_path) if os.path.exists(log_path) else started
            seconds = max(0.0, last_write - started)
            invocation.update(seconds=round(seconds, 1), failed=True, killed=True,
                              ended=local_time(last_write))
            timing["train"] = timing.get("train", 0.0) + seconds

    def train_command(self, run):
        return train_command(run, self.work_dir, self.records_dir, self.extra_train_flags,
                             self.spec.save_interval_steps)

    def training_identity(self, run):
        """All a run's result depends on: its ``train.py`` arguments but the logdir
        and records dir (``training_arguments``), the eval splits and the
        ``eval.py`` flags (the last two are the same for every run of an
        invocation)."""
        return (training_arguments(self.train_command(run)), self.eval_splits,
                self.spec.eval_flags)

    def per_image_path(self, run, split):
        """``(absolute path, path relative to the results dir)`` of a run's
        per-image confusion matrices on ``split``."""
        relative = os.path.join(PER_IMAGE_DIR, f"{run.name}.{split}.npz")
        return os.path.join(self.results_dir, relative), relative

    def eval_command(self, run, split):
        logdir = run_dir(self.work_dir, run)
        return ["eval.py", f"--checkpoint_dir={logdir}", f"--eval_split={split}",
                f"--dataset_dir={self.records_dir}",
                f"--output_json={logdir}/eval_{split}.json",
                f"--per_image_confusion={self.per_image_path(run, split)[0]}",
                *self.spec.eval_flags]

    def curve_command(self, run, split, checkpoints):
        logdir = run_dir(self.work_dir, run)
        return ["eval.py", f"--checkpoint_dir={logdir}",
                f"--checkpoint_path={','.join(checkpoints)}", f"--eval_split={split}",
                f"--dataset_dir={self.records_dir}",
                f"--output_json={os.path.join(logdir, CURVE_DIR)}/eval_{split}_{{step}}.json",
                *self.spec.eval_flags]

    def _evaluate(self, run, logdir, latest, previous, seconds):
        """Evaluates the final checkpoint on every eval split (per-image confusion
        matrices included) unless done; returns ``{split: entry}``, the previous
        result's entries of other splits kept."""
        evals = {k: v for k, v in previous.get("eval", {}).items()
                 if v.get("checkpoint") == latest}
        for split in self.eval_splits:
            path = os.path.join(logdir, f"eval_{split}.json")
            per_image, relative = self.per_image_path(run, split)
            evaluated = read_json(path)
            if (evaluated is None or evaluated.get("evaluated") != latest
                    or evaluated.get("per_image_confusion") != per_image
                    or not os.path.exists(per_image)):
                seconds[f"eval_{split}"] = self.command(
                    self.eval_command(run, split), f"{run.name}.eval.log", self.threads_per_run)
                evaluated = read_json(path)
            evals[split] = dict(miou=evaluated["miou"], per_class_iou=evaluated["per_class_iou"],
                                pixel_accuracy=evaluated["pixel_accuracy"], checkpoint=latest,
                                eval_crop_size=evaluated.get("eval_crop_size"),
                                per_image_confusion=relative)
        return evals

    def _curve(self, run, logdir, evals, previous, seconds):
        """Evaluates every kept checkpoint before the final step on every eval
        split (one eval.py per split, skipping those already evaluated);
        returns ``[{"step", "miou": {split: fraction}}, ...]`` with the final
        evaluation as the last point, merged with the previous result's points
        (None for an arm without a curve)."""
        if not run.arm.curve_every_steps:
            return None
        from core.training import kept_checkpoints

        steps = run.arm.steps
        kept = {step: path for step, path in kept_checkpoints(logdir).items() if step < steps}
        expected = len(run.arm.curve_steps)
        if len(kept) < expected:
            self.log(f"{run.name}: {len(kept)} of {expected} kept checkpoints for the curve "
                     f"in {logdir}/kept (trained before curve_every_steps was set?)")
        points = {p["step"]: dict(p["miou"]) for p in previous.get("curve") or []
                  if p["step"] < steps}
        curve_dir = os.path.join(logdir, CURVE_DIR)
        for split in self.eval_splits:
            pending = [path for step, path in kept.items()
                       if not _curve_result(curve_dir, split, step)]
            if pending:
                seconds[f"curve_{split}"] = seconds.get(f"curve_{split}", 0.0) + self.command(
                    self.curve_command(run, split, pending), f"{run.name}.curve.log",
                    self.threads_per_run)
            for step in kept:
                evaluated = _curve_result(curve_dir, split, step)
                if evaluated is None:
                    raise RuntimeError(f"{run.name}: eval.py wrote no curve result for step "
                                       f"{step} on {split} in {curve_dir}")
                points.setdefault(step, {})[split] = evaluated["miou"]
        points[steps] = {split: e["miou"] for split, e in evals.items()}
        return [dict(step=step, miou=miou) for step, miou in sorted(points.items())]

    def _report(self, run, logdir, latest, previous, seconds):
        """The pseudo-label report of the runs the spec's ``report`` names."""
        report = previous.get("pseudo_label_report")
        if report and report.get("checkpoint") != latest:
            report = None
        if not self.reported(run):
            return report
        report_dir = os.path.join(logdir, "pseudo_label_report")
        path = os.path.join(report_dir, f"{run.unlabeled_split}.json")
        full = read_json(path)
        if full is None or full.get("checkpoint") != latest:
            seconds["report"] = self.command(
                ["-m", "wss.pseudo_label_report", f"--checkpoint_dir={logdir}",
                 f"--dataset_dir={self.records_dir}", f"--split={run.unlabeled_split}",
                 f"--output_dir={report_dir}", f"--output_json={path}",
                 *self.extra_report_flags], f"{run.name}.report.log", self.threads_per_run)
            full = read_json(path)
        if full is None:
            return report
        return dict(split=full["split"], checkpoint=full["checkpoint"],
                    num_images=full["num_images"], cam_labels=full["cam_labels"],
                    temperature=full["settings"]["temperature"],
                    reliability_diagram=full.get("reliability_diagram"),
                    sources={name: {k: s[k] for k in (
                        "miou", "per_class_iou", "pixel_accuracy", "ece", "ece_sharpened",
                        "mean_confidence", "mean_confidence_sharpened", "num_pixels")}
                        for name, s in full["sources"].items()})

    def reported(self, run):
        """Whether the spec's ``report`` names the run or one of its aliases (whose
        result is a copy of the run's)."""
        return any((r.arm.id, r.seed) in self.spec.report
                   for r in (run, *self.aliases_of.get(run.name, ())))

    def commands(self, run):
        """The commands of a run (for --dry_run)."""
        logdir = run_dir(self.work_dir, run)
        commands = [self.train_command(run)]
        commands += [self.eval_command(run, split) for split in self.eval_splits]
        if run.arm.curve_every_steps:
            kept = [os.path.join(logdir, "kept", f"ckpt-{step}") for step in run.arm.curve_steps]
            commands += [self.curve_command(run, split, kept) for split in self.eval_splits]
        if self.reported(run):
            commands.append(["-m", "wss.pseudo_label_report", f"--checkpoint_dir={logdir}",
                             f"--dataset_dir={self.records_dir}",
                             f"--split={run.unlabeled_split}", *self.extra_report_flags])
        return commands

    def has_own_result(self, run):
        """Whether ``results/<run>.json`` is a result of the run's own training (not
        an alias's copy), e.g. a duplicate trained before duplicates were detected."""
        result = read_json(os.path.join(self.results_dir, f"{run.name}.json"))
        return result is not None and "alias_of" not in result

    def schedule(self, runs):
        """Splits ``runs`` into the runs to execute and the aliases: a run whose
        training duplicates an earlier run's (``canonical_of``) is not trained but
        gets a copy of the canonical run's result, the canonical run being added
        to the runs to execute when ``runs`` lacks it. A duplicate that already
        has a result of its own stays a run of its own."""
        schedule = Schedule(runs=[], aliases=[], added=[], kept=[])
        for run in runs:
            canonical = self.canonical_of.get(run.name)
            if canonical is None:
                schedule.runs.append(run)
            elif self.has_own_result(run):
                schedule.runs.append(run)
                schedule.kept.append(run.name)
            else:
                schedule.aliases.append((run, canonical))
        for _, canonical in schedule.aliases:
            if canonical.name not in {r.name for r in schedule.runs}:
                schedule.runs.append(canonical)
                schedule.added.append(canonical.name)
        return schedule

    def execute_all(self, runs, schedule=None):
        """Runs ``runs`` with ``parallel`` workers (PseudoSeg runs first, the longest),
        then fills the aliases among them (``schedule``, given when the caller
        computed it already); returns the names of the failed runs, aliases whose
        canonical run failed included."""
        schedule = schedule or self.schedule(runs)
        for alias, canonical in schedule.aliases:
            self.log(f"{alias.name}: alias of {canonical.name} (the same train.py command but "
                     f"for the logdir, the same eval splits): not trained, gets a copy of "
                     f"{canonical.name}'s result"
                     + (f"; {canonical.name} is executed in this invocation, under its own "
                        f"name, for it" if canonical.name in schedule.added else ""))
        for name in schedule.kept:
            self.log(f"{name}: duplicates {self.canonical_of[name].name}'s training but has a "
                     f"result of its own (trained before duplicates were detected): kept as a "
                     f"run of its own")
        failed = []

        def execute(run):
            try:
                self.execute(run)
            except (RuntimeError, OSError, ValueError, KeyError) as error:
                self.log(f"{run.name} failed: {error!r}")
                with self._lock:
                    failed.append(run.name)

        run_side_by_side(sorted(schedule.runs, key=lambda r: r.arm.mode != "pseudoseg"),
                         self.parallel, execute)
        for alias, canonical in schedule.aliases:
            if self.dry_run:
                continue
            if canonical.name in failed:
                self.log(f"{alias.name} failed: its canonical run {canonical.name} failed")
                failed.append(alias.name)
                continue
            try:
                self.fill_alias(alias, canonical)
            except (RuntimeError, OSError, ValueError, KeyError) as error:
                self.log(f"{alias.name} failed: {error!r}")
                failed.append(alias.name)
        return failed

    def fill_alias(self, alias, canonical):
        """Writes ``results/<alias>.json``: the canonical run's result (eval, curve,
        wall times, report, ...) under the alias's run name, arm, seed, draw, title
        and partition, with ``"alias_of": <canonical>`` and copies of the canonical
        run's per-image confusion matrices under the alias's name. Returns it."""
        source_path = os.path.join(self.results_dir, f"{canonical.name}.json")
        source = read_json(source_path)
        if source is None:
            raise RuntimeError(f"{alias.name}: alias of {canonical.name}, which has no result "
                               f"({source_path} is missing)")
        missing = [split for split in self.eval_splits if split not in source["eval"]]
        if missing:
            raise RuntimeError(f"{alias.name}: {source_path} has no evaluation on {missing}")
        evals = {}
        for split, entry in source["eval"].items():
            entry = dict(entry)
            if entry.get("per_image_confusion"):
                origin = os.path.join(self.results_dir, entry["per_image_confusion"])
                target, entry["per_image_confusion"] = self.per_image_path(alias, split)
                if os.path.exists(origin):  # else the summary notes the alias's as missing
                    copy_atomically(origin, target)
            evals[split] = entry
        result = dict(source, run=alias.name, arm=alias.arm.id, seed=alias.seed,
                      draw=alias.draw, title=alias.arm.title, partition=alias.arm.partition,
                      eval=evals, alias_of=canonical.name,
                      date=local_time())
        write_atomically(os.path.join(self.results_dir, f"{alias.name}.json"),
                         json.dumps(result, indent=1))
        miou = ", ".join(f"{split} {100 * e['miou']:.2f}" for split, e in evals.items())
        self.log(f"{alias.name}: mIoU {miou} (the result of {canonical.name})")
        return result


def copy_atomically(source, target):
    """Copies ``source`` to ``target`` under a temporary name, then renames it."""
    os.makedirs(os.path.dirname(target), exist_ok=True)
    tmp = f"{target}.tmp-{os.getpid()}-{threading.get_ident()}"
    shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def _curve_result(curve_dir, split, step):
    """The evaluation of the kept checkpoint of ``step`` on ``split``, or None."""
    evaluated = read_json(os.path.join(curve_dir, f"eval_{split}_{step}.json"))
    return evaluated if evaluated and evaluated.get("step") == step else None


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
    write_atomically(path, json.dumps((read_json(path) or []) + [record], indent=1))


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
