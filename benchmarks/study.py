"""Runs a semi-supervised study from a spec: data, splits, training, evaluation,
learning curves, report, summary (the code is in ``benchmarks/study_runner/``,
whose docstring describes the spec and every step).

    python benchmarks/study.py --spec=benchmarks/studies/msrc.json --work_dir=/tmp/msrc_study
    python benchmarks/study.py --spec=benchmarks/studies/msrc.json --work_dir=/tmp/msrc_study \\
        --arms=S,F --seeds=0                      # a part; its results merge with the others
    python benchmarks/study.py --spec=... --work_dir=... --summary_only   # rebuild the summary
"""

if __package__ in (None, ""):
    import os, sys  # pylint: disable=g-multiple-import
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.study_runner.cli import run

if __name__ == "__main__":
    run()
