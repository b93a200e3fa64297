"""The README's demo over several seeds: PseudoSeg against its supervised baseline.

    python benchmarks/demo_seeds.py --work_dir=/tmp/demo_seeds --seeds=0,1,2 --parallel=2

Trains ``configs/demo.flags`` (PseudoSeg) and ``configs/demo_supervised.flags``
(supervised) with ``train.py --seed=s`` for every seed (the demo's data, its
labeled/unlabeled split and val are fixed; the seed sets initialisation, input
order, augmentation and dropout), reads each run's ``eval_val.json`` and writes
``<work_dir>/summary.json`` and ``summary.md``: val mIoU per run, mean and
sample standard deviation (ddof=1) per arm, and the seed-paired difference
PseudoSeg minus supervised. Runs whose ``eval_val.json`` exists are not
retrained, so an interrupted invocation resumes, and ``--summary_only``
rewrites the summary from what is there.
"""

from __future__ import annotations

if __package__ in (None, ""):
    import os, sys  # pylint: disable=g-multiple-import
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import datetime
import json
import os
import subprocess
import sys
import time

from absl import app
from absl import flags

from benchmarks.study_runner import mean_std, run_side_by_side, write_atomically

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARMS = {"pseudoseg": "configs/demo.flags", "supervised": "configs/demo_supervised.flags"}
DEMO_DATA = os.path.join(REPO, "data", "synthetic")


def run_dir(work_dir, arm, seed):
    return os.path.join(work_dir, f"{arm}_seed{seed}")


def train_command(work_dir, arm, seed, extra_train_flags=()):
    return [sys.executable, "train.py", f"--flagfile={ARMS[arm]}", f"--seed={seed}",
            f"--train_logdir={run_dir(work_dir, arm, seed)}", "--export=false",
            *extra_train_flags]


def train(work_dir, arm, seed, threads, extra_train_flags):
    """Trains one run (log in ``<run>.log``); returns its wall seconds."""
    env = {**os.environ, "TF_NUM_INTRAOP_THREADS": str(threads),
           "OMP_NUM_THREADS": str(threads)}
    log_path = run_dir(work_dir, arm, seed) + ".log"
    command = train_command(work_dir, arm, seed, extra_train_flags)
    print(f"[{datetime.datetime.now():%H:%M:%S}] $ {' '.join(command[1:])} > {log_path}",
          flush=True)
    start = time.time()
    with open(log_path, "w") as log:
        code = subprocess.call(command, cwd=REPO, env=env, stdout=log,
                               stderr=subprocess.STDOUT)
    seconds = time.time() - start
    if code != 0:
        raise RuntimeError(f"{arm} seed {seed} failed (exit {code}); see {log_path}")
    with open(os.path.join(run_dir(work_dir, arm, seed), "wall_time.json"), "w") as f:
        json.dump({"seconds": seconds, "threads": threads}, f)
    return seconds


def summarize(work_dir, seeds):
    """Per run mIoU and wall time; per arm mean and std; seed-paired differences."""
    runs = {arm: {} for arm in ARMS}
    for arm in ARMS:
        for seed in seeds:
            path = os.path.join(run_dir(work_dir, arm, seed), "eval_val.json")
            if not os.path.exists(path):
                continue
            with open(path) as f:
                miou = 100 * json.load(f)["miou"]
            wall_path = os.path.join(run_dir(work_dir, arm, seed), "wall_time.json")
            wall = None
            if os.path.exists(wall_path):
                with open(wall_path) as f:
                    wall = json.load(f)["seconds"]
            runs[arm][seed] = {"miou": miou, "wall_seconds": wall}
    arms = {}
    for arm, by_seed in runs.items():
        mean, std = mean_std([r["miou"] for r in by_seed.values()])
        arms[arm] = {"flagfile": ARMS[arm], "seeds": sorted(by_seed), "mean": mean, "std": std}
    paired = [runs["pseudoseg"][s]["miou"] - runs["supervised"][s]["miou"]
              for s in seeds if s in runs["pseudoseg"] and s in runs["supervised"]]
    mean, std = mean_std(paired)
    return {"runs": {arm: {str(s): r for s, r in by_seed.items()}
                     for arm, by_seed in runs.items()},
            "arms": arms,
            "pseudoseg_minus_supervised": {"per_seed": paired, "mean": mean, "std": std,
                                           "all_positive": bool(paired) and min(paired) > 0}}


def _pm(mean, std):
    if mean is None:
        return "-"
    return f"{mean:.2f}" + ("" if std is None else f" ± {std:.2f}")


def markdown(summary, seeds):
    lines = ["| arm | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± std |",
             "|---|" + "---|" * (len(seeds) + 1)]
    for arm, stats in summary["arms"].items():
        cells = [f"{summary['runs'][arm][str(s)]['miou']:.2f}"
                 if str(s) in summary["runs"][arm] else "-" for s in seeds]
        lines.append(f"| {arm} (`{stats['flagfile']}`) | " + " | ".join(cells)
                     + f" | {_pm(stats['mean'], stats['std'])} |")
    diff = summary["pseudoseg_minus_supervised"]
    cells = [f"{d:+.2f}" for d in diff["per_seed"]] + ["-"] * (len(seeds) - len(diff["per_seed"]))
    lines.append("| PseudoSeg − supervised (seed-paired) | " + " | ".join(cells)
                 + f" | {_pm(diff['mean'], diff['std'])} |")
    return "\n".join(lines) + "\n"


FLAGS = flags.FLAGS
flags.DEFINE_string("work_dir", "/tmp/demo_seeds", "Where the runs and the summary go.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Training seeds (--seed of train.py).")
flags.DEFINE_list("arms", list(ARMS), f"Arms to train, of {sorted(ARMS)}.")
flags.DEFINE_integer("parallel", 1, "Runs trained side by side.")
flags.DEFINE_multi_string("extra_train_flags", [], "Appended to every train.py invocation.")
flags.DEFINE_bool("summary_only", False, "Only rewrite the summary from finished runs.")


def main(argv):
    del argv
    try:
        seeds = [int(s) for s in FLAGS.seeds]
    except ValueError as error:
        raise app.UsageError(f"--seeds must be integers, got {FLAGS.seeds}") from error
    unknown = sorted(set(FLAGS.arms) - set(ARMS))
    if unknown:
        raise app.UsageError(f"--arms: unknown {unknown}; known {sorted(ARMS)}")
    if FLAGS.parallel < 1:
        raise app.UsageError(f"--parallel must be >= 1, got {FLAGS.parallel}")
    os.makedirs(FLAGS.work_dir, exist_ok=True)
    if not FLAGS.summary_only:
        from datasets import synthetic
        synthetic.ensure_demo_dataset(DEMO_DATA)  # once, before runs side by side
        todo = [(arm, seed) for seed in seeds  # PseudoSeg first: the longer runs
                for arm in sorted(FLAGS.arms, key=lambda a: a != "pseudoseg")
                if not os.path.exists(os.path.join(run_dir(FLAGS.work_dir, arm, seed),
                                                   "eval_val.json"))]
        threads = max(1, (os.cpu_count() or 1) // FLAGS.parallel)
        failures = []

        def train_one(job):
            try:
                train(FLAGS.work_dir, *job, threads, FLAGS.extra_train_flags)
            except RuntimeError as error:
                failures.append(str(error))

        run_side_by_side(todo, FLAGS.parallel, train_one)
        if failures:
            print("\n".join(failures), file=sys.stderr)
    summary = summarize(FLAGS.work_dir, seeds)
    write_atomically(os.path.join(FLAGS.work_dir, "summary.json"),
                     json.dumps(summary, indent=1) + "\n")
    table = markdown(summary, seeds)
    write_atomically(os.path.join(FLAGS.work_dir, "summary.md"), table)
    print(table)
    return 1 if not FLAGS.summary_only and failures else 0


if __name__ == "__main__":
    app.run(main)
