"""The study runner's command line (``python benchmarks/study.py --spec=... --work_dir=...``):
flags, then spec, plan, data, runs, summary. See the package docstring."""

from __future__ import annotations

import os
import sys
import time

from benchmarks.study_runner.common import local_time
from benchmarks.study_runner.execution import Runner, record_invocation
from benchmarks.study_runner.planning import plan_runs
from benchmarks.study_runner.rendering import write_summary
from benchmarks.study_runner.spec import SpecError, load_spec


def define_flags():
    """Defines the runner's absl flags (once per process)."""
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
    flags.DEFINE_integer("curve_every_steps", None,
                         "Overrides the spec's curve_every_steps (top-level and per arm); 0 "
                         "turns learning curves off (e.g. for a smoke test with few steps).")
    flags.mark_flags_as_required(["spec", "work_dir"])


def main(argv):
    from absl import app, flags

    FLAGS = flags.FLAGS
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if FLAGS.parallel < 1:
        raise app.UsageError(f"--parallel must be >= 1, got {FLAGS.parallel}")
    if FLAGS.curve_every_steps is not None and FLAGS.curve_every_steps < 0:
        raise app.UsageError(f"--curve_every_steps must be >= 0 (0: no curves), got "
                             f"{FLAGS.curve_every_steps}")
    try:
        seeds = None if FLAGS.seeds is None else [int(s) for s in FLAGS.seeds]
    except ValueError:
        raise app.UsageError(f"--seeds must be integers, got {FLAGS.seeds}") from None
    start = time.monotonic()
    work_dir = os.path.abspath(FLAGS.work_dir)
    try:
        spec = load_spec(FLAGS.spec, FLAGS.extra_train_flags, FLAGS.curve_every_steps)
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
    started = local_time()
    schedule = runner.schedule(runs)
    failed = runner.execute_all(runs, schedule)
    if FLAGS.dry_run:
        return
    record_invocation(work_dir, dict(
        started=started, minutes=(time.monotonic() - start) / 60,
        runs=[r.name for r in runs], parallel=FLAGS.parallel,
        aliases={alias.name: canonical.name for alias, canonical in schedule.aliases},
        added_for_aliases=schedule.added,
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


def run():
    """The entry point: defines the flags and runs ``main``."""
    from absl import app

    define_flags()
    app.run(main)
