"""The study runner: a semi-supervised study from a spec, in parts that resume and merge.

    python benchmarks/study.py --spec=benchmarks/studies/msrc.json --work_dir=/tmp/msrc_study
    python benchmarks/study.py --spec=benchmarks/studies/msrc.json --work_dir=/tmp/msrc_study \\
        --arms=S,F --seeds=0                      # a part; its results merge with the others
    python benchmarks/study.py --spec=... --work_dir=... --summary_only   # rebuild the summary

One module per job:

* ``spec``: reads and validates the spec (``load_spec``; errors name the file
  and field) and the arms' ``train.py`` flagfiles.
* ``planning``: the runs (arm x seed, their splits and names), their
  ``train.py`` commands and the duplicates among them.
* ``execution``: the ``Runner`` (data, training, evaluation, curves, report,
  result files, aliases) and the worker pool ``run_side_by_side``.
* ``summarizing``: statistics over the result files (mean and std over seeds,
  seed-paired differences, bootstrap intervals over images, curves).
* ``rendering``: ``summary.json``, ``summary.md`` and ``learning_curves.png``.
* ``cli``: the command line of ``benchmarks/study.py``.

The spec (JSON, ``benchmarks/studies/*.json``) names the dataset and its
source folder, the partitions of the training split into pixel-labeled and
unlabeled (or image-level labeled) images, and the arms: a ``train.py``
flagfile each, with the seeds to run and the partition it trains on. Fields
(``spec.load_spec`` checks them):

* ``description``: one line.
* ``dataset``: ``name``, ``source_dir`` (relative to the repository root or
  absolute, e.g. ``data/sources/msrc``; ``--source_dir`` overrides it),
  optional ``train_split`` ("train"), ``eval_source_splits`` (["val"]),
  ``scale`` (1.0), ``num_shards`` (4); ``num_classes``, ``ignore_label``,
  ``class_names`` unless the name is a registered dataset.
* ``partitions``: ``{name: {"denominator": N | "num_labeled": K, "seeds": [...]
  | "fixed_seed": s, "labeled": "labeled_{seed}", "unlabeled": "unlabeled_{seed}"}}``:
  one labeled draw per seed (or one fixed draw); ``all`` is reserved for the
  whole training split.
* ``arms``: ``[{"id", "title", "flagfile", "partition", "seeds"}, ...]``; the
  flagfile sets ``--mode``, ``--training_number_of_steps`` and ``--dataset``.
  Optional per arm:

  - ``draw``: the partition draw every seed of the arm trains on, so its seeds
    vary only the training seed (initialisation, input order, augmentation);
    runs are then named ``<arm>_draw<d>_seed<s>`` (otherwise ``<arm>_seed<s>``,
    seed s training on draw s).
  - ``curve_every_steps``: overrides the top-level value for this arm (0: none).
* ``pairs``: ``[["P", "S"], ...]``: differences P - S over the runs the two
  arms have with the same training seed and the same labeled draw (an arm on
  ``all`` pairs by training seed).
* ``report``: ``[{"arm": "P", "seed": 0}, ...]``: runs whose pseudo labels
  ``wss.pseudo_label_report`` scores.
* ``eval_flags``: extra ``eval.py`` flags (e.g. ``["--eval_crop_size=none"]``).
* ``curve_every_steps`` (optional, 0): every run keeps its network weights at
  every multiple of N steps (``train.py --keep_checkpoint_steps=N``, in
  ``runs/<run>/kept/``); after training each is evaluated on every eval split
  (``runs/<run>/curve/eval_<split>_<step>.json``) and the run's result gets
  ``curve: [{"step": s, "miou": {split: fraction}}, ...]``, the final
  evaluation last. At least 6 points per run (steps // N >= 6).
* ``curves`` (optional): arm ids drawn in ``learning_curves.png`` (val mIoU
  against step, mean over seeds thick, each seed thin).
* ``save_interval_steps`` (optional): ``train.py --save_interval_steps`` of
  every run: a killed run loses at most that many steps.

For example, stability runs on one fixed labeled draw next to the main arms:

    "curve_every_steps": 250, "curves": ["S", "F", "P"], "save_interval_steps": 250,
    "arms": [
      {"id": "S", "title": "(S) supervised", "flagfile": "configs/msrc/s_supervised_1_4.flags",
       "partition": "1/4", "seeds": [0, 1, 2]},
      {"id": "S_stab", "title": "(S), draw 0, training seeds 0-2", "draw": 0,
       "flagfile": "configs/msrc/s_supervised_1_4.flags", "partition": "1/4",
       "seeds": [0, 1, 2]}, ...]

Here ``S_stab_draw0_seed0`` is the very training of ``S_seed0`` (draw 0,
training seed 0): it is trained once (see "Duplicate runs" below).

The runner, each step skipped when its output exists (so an interrupted study
resumes, and a re-run invocation skips finished runs and evaluations):

1. Source: the dataset folder (``images/<split>/<stem>.jpg|png``,
   ``labels/<split>/<stem>.png``, ``<split>.txt``), or with ``scale`` a
   resized copy of it in ``<work_dir>/source``.
2. Splits: ``datasets/make_splits.py`` draws each partition's labeled ids (every
   class covered, deterministic for the seed) and writes the rest as its
   unlabeled list, for every draw.
3. Records: ``datasets/build_folder.py`` converts the training split (with the
   classes of each mask as image-level labels), every partition list, the
   ``eval_source_splits`` and any split of ``--eval_splits`` the source folder
   has (e.g. ``--eval_splits=val,test``) into ``<work_dir>/records``.
4. Runs: ``train.py --flagfile=<arm's flagfile> --train_logdir=<work_dir>/runs/<run>
   --dataset_dir=<work_dir>/records --seed=<seed> --train_split=<labeled split>
   [--train_split_cls=<unlabeled split>] [--keep_checkpoint_steps=N]
   [--save_interval_steps=M]``; a run with a checkpoint short of its final
   step resumes from it (nothing of a run is ever deleted). A run without a logdir
   whose ``results/<run>.json`` is complete for the invocation (a part run in
   an earlier session or another work dir, its ``results/`` copied in: final
   step, same ``train.py`` command but for the logdir and records dir, every
   eval split with its per-image matrices, the curve and the report) is not
   retrained (``Runner.finished_elsewhere``). The runner and
   its commands hold ``runs/<run>.lock`` (``flock``) while at work on a run,
   so another invocation, or one started while a killed runner's train.py
   still runs, leaves the run alone and reports it as failed. Then ``eval.py``
   of the final checkpoint on every split of ``--eval_splits``, writing the
   per-image confusion matrices to ``results/per_image/<run>.<split>.npz``;
   the kept checkpoints (one ``eval.py`` per split for all of them); and, for
   the runs ``report`` names, the pseudo-label report.
5. ``<work_dir>/results/<run>.json`` per run (mIoU and per-class IoU per split,
   the curve, wall times of every train.py invocation, failed ones included
   and killed ones (a runner killed mid-training leaves its invocation marked
   running; the next counts it from its start to the train log's last write),
   and of the evaluations, the initial checkpoint, the pseudo-label report);
   and from every result present, ``summary.json``, ``summary.md`` and
   ``learning_curves.png``: mean and sample std (ddof=1) per arm, paired
   differences, 95% bootstrap intervals over the evaluated images of every
   run's mIoU, arm mean and difference (``summarizing``), curves with the
   change over their last quarter, per-class IoU, the pseudo-label table and
   the wall times. Parts run by separate invocations (``--arms``, ``--seeds``,
   other sessions or machines sharing, or copying in, ``results/``) merge
   into one summary. Each invocation's wall time is appended to
   ``<work_dir>/invocations.json``.

Duplicate runs. Two runs whose ``train.py`` commands are identical but for
``--train_logdir`` (same flagfile, splits, training seed, extra flags, kept
and saved checkpoints), evaluated on the same splits with the same
``eval_flags``, are one training: among all the runs of the spec (not only
those of the invocation), the first in spec order (the run of the arm listed
first) is the canonical run, the others its aliases. An alias is never
trained or evaluated (no ``runs/<alias>/``): once its canonical run is
executed, it gets ``results/<alias>.json``, a copy of the canonical run's
result (eval, curve, wall times, pseudo-label report) with its own ``run``,
``arm``, ``seed``, ``draw``, ``title``, ``partition`` and ``"alias_of":
"<canonical>"``, and copies of its per-image confusion matrices
(``results/per_image/<alias>.<split>.npz``); the summary treats it as a run
of its own arm (statistics, pairs, intervals, curves) and marks it in the
runs table. When an invocation selects an alias but not its canonical run
(e.g. ``--arms=S_stab`` alone), the canonical run is executed as part of it,
under its own name: trained (or resumed) if it has not been, otherwise only
brought up to date (new eval splits), so an existing result is reused
without training. An alias's result is written by the invocations that
select the alias (one of the canonical run alone leaves it as it was). The
canonical run does the pseudo-label report when
``report`` names it or one of its aliases. ``--dry_run`` prints the aliases
and the canonical runs added for them; ``invocations.json`` records them. A
duplicate that already has a result of its own (no ``alias_of``: trained by
a runner before duplicates were detected) stays a run of its own.

``--parallel=N`` runs N runs side by side, each with ``TF_NUM_INTRAOP_THREADS``
(and ``OMP_NUM_THREADS``) set to the CPU count / N. Logs go to
``<work_dir>/logs/<run>.{train,eval,curve,report}.log``.
"""

from benchmarks.study_runner.common import REPO, read_json, write_atomically
from benchmarks.study_runner.execution import (RunLocked, Runner, record_invocation,
                                               run_side_by_side)
from benchmarks.study_runner.planning import Run, plan_runs, train_command
from benchmarks.study_runner.rendering import learning_curves_figure, markdown, write_summary
from benchmarks.study_runner.spec import (ALL, ArmSpec, DatasetSpec, PartitionSpec, Spec,
                                          SpecError, flags_of, load_spec, read_flagfile)
from benchmarks.study_runner.summarizing import (Bootstrap, interval, load_results, mean_std,
                                                 miou_of_confusions, resample_counts, summarize)
