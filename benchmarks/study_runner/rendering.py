"""Renders a study summary: ``summary.json``, ``summary.md`` (markdown tables
with bootstrap intervals, e.g. ``31.20 [28.40, 34.00]``) and
``learning_curves.png`` (val mIoU against step for the spec's ``curves`` arms:
the mean over seeds, thick, and each seed, thin), all written atomically
next to each other in the work dir."""

from __future__ import annotations

import json
import os

from benchmarks.study_runner.common import local_time, read_json, write_atomically
from benchmarks.study_runner.summarizing import load_results, summarize

INVOCATIONS = "invocations.json"  # wall time of every invocation that trained or evaluated
CURVES_FIGURE = "learning_curves.png"


def _fmt(value, digits=2):
    return "-" if value is None else f"{value:.{digits}f}"


def _ci(bounds, sign=""):
    """`` [low, high]`` of an interval, or "" without one."""
    if not bounds:
        return ""
    return f" [{bounds[0]:{sign}.2f}, {bounds[1]:{sign}.2f}]"


def _pm(mean, std, bounds=None, sign=""):
    if mean is None:
        return "-"
    text = f"{mean:{sign}.2f}" if std is None else f"{mean:{sign}.2f} ± {std:.2f}"
    return text + _ci(bounds, sign)


def markdown(summary):
    """The summary as markdown tables."""
    lines = [f"# Study {summary['spec']}", "", summary["description"], "",
             f"{summary['units']}."]
    boot = summary.get("bootstrap")
    if boot:
        lines += ["", f"[low, high]: {100 * boot['confidence']:.0f}% bootstrap interval over "
                  f"the evaluated images ({boot['samples']} resamples, seed {boot['seed']}; "
                  f"{boot['method']}): evaluation noise only, the training seeds fixed."]
        lines += [f"Bootstrap note: {problem}." for problem in boot.get("problems", [])]
    lines.append("")
    splits = summary["splits"]
    lines += ["| arm | runs | " + " | ".join(f"mIoU {s} (mean ± std [interval])" for s in splits)
              + " | " + " | ".join(f"{s} per seed" for s in splits)
              + " | train wall time per run |",
              "|---|---|" + "---|" * (2 * len(splits) + 1)]
    for arm_id, arm in summary["arms"].items():
        cells = [_pm(arm["splits"][s]["miou_mean"], arm["splits"][s]["miou_std"],
                     arm["splits"][s].get("miou_mean_ci"))
                 if s in arm["splits"] else "-" for s in splits]
        seeds = [", ".join(f"{seed}: {v:.2f}{_ci(arm['splits'][s].get('miou_ci', {}).get(seed))}"
                           for seed, v in arm["splits"][s]["miou"].items())
                 if s in arm["splits"] else "-" for s in splits]
        train = [v.get("train") for v in arm["wall_seconds"].values() if v.get("train")]
        wall = "-" if not train else f"{sum(train) / len(train) / 60:.1f} min"
        title = arm["title"] + ("" if arm.get("draw") is None else f" (draw {arm['draw']})")
        lines.append(f"| {title} | {len(arm['seeds'])}/{len(arm['seeds_planned'])} | "
                     + " | ".join(cells) + " | " + " | ".join(seeds) + f" | {wall} |")
    if summary["pairs"]:
        lines += ["", "Seed-paired differences (same training seed and labeled draw):", "",
                  "| difference | split | seeds | per seed | mean ± std [interval] | min | "
                  "all > 0 |", "|---|---|---|---|---|---|---|"]
        for p in summary["pairs"]:
            per_seed = ", ".join(
                f"{s}: {d:+.2f}{_ci(p.get('differences_ci', {}).get(s), '+')}"
                for s, d in p["differences"].items())
            lines.append(f"| {p['a']} − {p['b']} | {p['split']} | {len(p['seeds'])} | "
                         f"{per_seed} | {_pm(p['mean'], p['std'], p.get('mean_ci'), '+')} | "
                         f"{p['min']:+.2f} | {'yes' if p['all_positive'] else 'no'} |")
    curves = [(arm_id, arm) for arm_id, arm in summary["arms"].items() if arm.get("curve")]
    if curves:
        lines += ["", "Learning curves (mIoU at each evaluated step, mean over seeds; last "
                  "quarter: final minus the first point at or after 3/4 of the steps, mean "
                  "over seeds, and the largest range of the points there):", "",
                  "| arm | split | step: mIoU | last-quarter change | last-quarter range |",
                  "|---|---|---|---|---|"]
        for arm_id, arm in curves:
            for split, curve in arm["curve"].items():
                points = ", ".join(f"{step}: {_fmt(value)}"
                                   for step, value in zip(curve["steps"], curve["mean"]))
                ranges = [q["range"] for q in curve["last_quarter"].values()]
                lines.append(f"| {arm_id} | {split} | {points} | "
                             f"{_fmt(curve['last_quarter_change_mean'])} | "
                             f"{_fmt(max(ranges) if ranges else None)} |")
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
              "| run | steps | train | eval | curve evals | report | load at start | "
              "initial weights (loaded / missing / excluded / unused) | extra flags |",
              "|---|---|---|---|---|---|---|---|---|"]
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
        curve = sum(v for k, v in seconds.items() if k.startswith("curve_"))
        run = r["run"] if not r.get("alias_of") else f"{r['run']} (= {r['alias_of']})"
        lines.append(f"| {run} | {r['steps']} | {_fmt(seconds.get('train'), 0)} s | "
                     f"{evals:.0f} s | {curve:.0f} s | {_fmt(seconds.get('report'), 0)} s | "
                     f"{_fmt(r['load_average_at_start'])} | {init_text} | "
                     f"{' '.join(r['extra_train_flags']) or '-'} |")
    return "\n".join(lines) + "\n"


def learning_curves_figure(summary, path, split="val"):
    """Writes ``split`` mIoU against step of the summary's ``curves`` arms to ``path``
    (PNG): per arm the mean over seeds (thick) and each seed (thin, same
    colour). Returns False (and writes nothing) when none of them has a curve."""
    arms = [(arm_id, summary["arms"][arm_id]) for arm_id in summary.get("curves", [])
            if (summary["arms"][arm_id].get("curve") or {}).get(split)]
    if not arms:
        return False
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for index, (arm_id, arm) in enumerate(arms):
        curve = arm["curve"][split]
        colour = f"C{index}"
        for values in curve["per_seed"].values():
            points = [(s, v) for s, v in zip(curve["steps"], values) if v is not None]
            axes.plot(*zip(*points), color=colour, linewidth=0.8, alpha=0.45)
        points = [(s, v) for s, v in zip(curve["steps"], curve["mean"]) if v is not None]
        axes.plot(*zip(*points), color=colour, linewidth=2.2, marker="o", markersize=3,
                  label=f"{arm['title']} (mean of {len(curve['per_seed'])})")
    axes.set_xlabel("training step")
    axes.set_ylabel(f"{split} mIoU")
    axes.set_title(f"Learning curves, {summary['spec']}")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    temporary = f"{path}.tmp-{os.getpid()}.png"
    figure.savefig(temporary, dpi=120, format="png")
    plt.close(figure)
    os.replace(temporary, path)
    return True


def write_summary(spec, work_dir):
    """Builds ``summary.json``, ``summary.md`` and ``learning_curves.png`` (when the
    spec names ``curves`` that have data) from every result file present."""
    results_dir = os.path.join(work_dir, "results")
    summary = summarize(spec, load_results(results_dir), results_dir)
    summary["invocations"] = read_json(os.path.join(work_dir, INVOCATIONS)) or []
    summary["date"] = local_time()
    summary["work_dir"] = work_dir
    if learning_curves_figure(summary, os.path.join(work_dir, CURVES_FIGURE)):
        summary["learning_curves_figure"] = CURVES_FIGURE
    write_atomically(os.path.join(work_dir, "summary.json"), json.dumps(summary, indent=1))
    text = markdown(summary)
    if summary.get("learning_curves_figure"):
        text += f"\n![learning curves]({CURVES_FIGURE})\n"
    if summary["invocations"]:
        text += "\nInvocations of the runner:\n\n| started | minutes | runs | parallel | " \
                "failed |\n|---|---|---|---|---|\n" + "".join(
                    f"| {i['started']} | {i['minutes']:.1f} | {' '.join(i['runs'])} | "
                    f"{i['parallel']} | {' '.join(i['failed']) or '-'} |\n"
                    for i in summary["invocations"])
    write_atomically(os.path.join(work_dir, "summary.md"), text)
    return summary, text
