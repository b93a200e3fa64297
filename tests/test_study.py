"""The study runner (benchmarks/study.py, benchmarks/study_runner/): spec validation, run
planning, summary statistics and bootstrap intervals against numpy, learning curves, merging
of partial results, and one tiny end-to-end study on generated images that is killed and
resumes."""

import json
import os
import re
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

from benchmarks import study_runner as study

REPO = Path(__file__).resolve().parents[1]


# -- helpers ------------------------------------------------------------------------


def write_flagfile(path, *lines):
    path.write_text("\n".join(["# test flagfile", *lines]) + "\n")
    return str(path)


def base_spec(tmp_path, **overrides):
    """A valid spec dict on an unregistered dataset 'tiny' with flagfiles in tmp_path."""
    base = write_flagfile(tmp_path / "base.flags", "--dataset=tiny",
                          "--training_number_of_steps=7")
    supervised = write_flagfile(tmp_path / "s.flags", f"--flagfile={base}", "--mode=supervised")
    pseudoseg = write_flagfile(tmp_path / "p.flags", f"--flagfile={base}", "--mode=pseudoseg")
    spec = {
        "description": "test study",
        "dataset": {"name": "tiny", "source_dir": str(tmp_path / "source"), "num_classes": 3,
                    "ignore_label": 255, "class_names": ["bg", "a", "b"]},
        "partitions": {
            "1/4": {"denominator": 4, "seeds": [0, 1, 2], "labeled": "lab_{seed}",
                    "unlabeled": "unl_{seed}"},
            "one": {"num_labeled": 2, "fixed_seed": 5, "labeled": "lab_fixed",
                    "unlabeled": "unl_fixed"}},
        "arms": [
            {"id": "S", "title": "(S)", "flagfile": supervised, "partition": "1/4",
             "seeds": [0, 1, 2]},
            {"id": "P", "title": "(P)", "flagfile": pseudoseg, "partition": "1/4",
             "seeds": [0, 1, 2]},
            {"id": "F", "title": "(F)", "flagfile": supervised, "partition": "all",
             "seeds": [0]},
            {"id": "X", "title": "(X)", "flagfile": pseudoseg, "partition": "one",
             "seeds": [3, 4]}],
        "pairs": [["P", "S"], ["F", "S"]],
        "report": [{"arm": "P", "seed": 0}],
    }
    spec.update(overrides)
    return spec


def save_spec(tmp_path, spec, name="spec.json"):
    path = tmp_path / name
    path.write_text(json.dumps(spec))
    return str(path)


def result(arm, seed, miou, per_class=None, splits=("val",)):
    return {"arm": arm, "seed": seed, "steps": 7,
            "eval": {split: {"miou": miou, "per_class_iou": per_class or [miou, miou, None],
                             "pixel_accuracy": 0.5} for split in splits},
            "seconds": {"train": 60.0 + seed, "eval_val": 5.0}}


# -- spec ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["msrc", "msrc_ablations", "camvid"])
def test_the_committed_specs_load(name):
    spec = study.load_spec(str(REPO / "benchmarks" / "studies" / f"{name}.json"))
    runs = study.plan_runs(spec)
    if name.startswith("msrc"):
        assert spec.dataset.num_classes == 16 and spec.dataset.class_names[12] == "face"
        # Every arm: the same steps, batch, crop and schedule (configs/msrc/base.flags).
        shared = {"training_number_of_steps", "train_batch_size", "train_crop_size",
                  "base_learning_rate", "learning_power", "batch_norm_decay"}
        assert len({tuple(a.settings[k] for k in sorted(shared))
                    for a in spec.arms.values()}) == 1
        assert spec.arms["S"].settings["training_number_of_steps"] == "4000"
        assert spec.arms["S"].settings["tf_initial_checkpoint"].endswith(
            "mobilenet_v2_1.0_224/model.ckpt")
        assert spec.report == (("P", 0),)
    if name == "msrc_ablations":
        assert [r.name for r in runs] == ["S_seed0", "P_seed0", "R_seed0", "D_seed0", "A_seed0"]
        assert spec.arms["R"].settings["tf_initial_checkpoint"] == ""
    elif name == "msrc":
        assert len(runs) == 22
        assert [a for a in spec.arms] == ["S", "P", "W", "F", "S8", "P8", "S_stab", "P_stab"]
        assert spec.eval_flags == ("--eval_crop_size=none",)
        by_name = {r.name: r for r in runs}
        assert by_name["P_seed2"].train_split == "labeled_1_4_seed2"
        assert by_name["P_seed2"].unlabeled_split == "unlabeled_1_4_seed2"
        assert by_name["P_stab_draw0_seed2"].train_split == "labeled_1_4_seed0"
        assert by_name["P_stab_draw0_seed2"].seed == 2
        assert by_name["S8_seed1"].train_split == "labeled_1_8_seed1"
        assert by_name["S8_seed1"].unlabeled_split is None
        assert by_name["F_seed0"].train_split == "train"
        assert spec.arms["W"].settings["weakly"] == "true"
        # The stability arms' seed 0 is the main arms' seed 0, trained once.
        runner = study.Runner(spec, "/nonexistent")
        assert {k: v.name for k, v in runner.canonical_of.items()} == {
            "S_stab_draw0_seed0": "S_seed0", "P_stab_draw0_seed0": "P_seed0"}
    else:
        assert len(runs) == 11
        assert {r.train_split for r in runs} == {"labeled_46", "train"}
        assert spec.dataset.scale == 0.5 and spec.eval_flags == ("--eval_crop_size=none",)
        h = next(r for r in runs if r.arm.id == "h")
        assert h.seed == 1 and h.arm.settings["seed"] == "1"


def test_a_valid_spec_plans_its_runs(tmp_path):
    spec = study.load_spec(save_spec(tmp_path, base_spec(tmp_path)))
    runs = study.plan_runs(spec)
    assert [r.name for r in runs] == ["S_seed0", "S_seed1", "S_seed2", "P_seed0", "P_seed1",
                                      "P_seed2", "F_seed0", "X_seed3", "X_seed4"]
    by_name = {r.name: r for r in runs}
    assert (by_name["S_seed1"].train_split, by_name["S_seed1"].unlabeled_split) == ("lab_1", None)
    assert (by_name["P_seed2"].train_split, by_name["P_seed2"].unlabeled_split) == (
        "lab_2", "unl_2")
    assert by_name["F_seed0"].train_split == "train"
    # A fixed draw serves every seed.
    assert {(r.train_split, r.unlabeled_split) for r in runs if r.arm.id == "X"} == {
        ("lab_fixed", "unl_fixed")}
    assert [r.name for r in study.plan_runs(spec, ["P", "F"], [0])] == ["P_seed0", "F_seed0"]
    command = study.train_command(by_name["P_seed2"], "/w", "/w/records", ["--log_steps=1"])
    assert command == ["train.py", f"--flagfile={tmp_path}/p.flags",
                       "--train_logdir=/w/runs/P_seed2", "--dataset_dir=/w/records",
                       "--seed=2", "--train_split=lab_2", "--train_split_cls=unl_2",
                       "--log_steps=1"]
    with pytest.raises(study.SpecError, match="--arms: unknown arm.*'Q'"):
        study.plan_runs(spec, ["Q"])


def test_extra_train_flags_override_the_flagfiles(tmp_path):
    spec = study.load_spec(save_spec(tmp_path, base_spec(tmp_path)),
                           ["--training_number_of_steps=2", "--noweakly"])
    assert spec.arms["S"].settings["training_number_of_steps"] == "2"
    assert spec.arms["S"].settings["weakly"] == "false"


def _colliding_run_names(spec):
    spec["arms"][0].update(draw=1, seeds=[2])  # S on draw 1: run S_draw1_seed2
    spec["arms"].append({"id": "S_draw1", "title": "(S) again", "partition": "1/4",
                         "seeds": [2], "flagfile": spec["arms"][0]["flagfile"]})


def _break(tmp_path, change):
    spec = base_spec(tmp_path)
    change(spec)
    return save_spec(tmp_path, spec)


@pytest.mark.parametrize("change, field, message", [
    (lambda s: s.pop("arms"), "arms", "missing"),
    (lambda s: s.update(extra=1), "spec", "unknown field"),
    (lambda s: s["dataset"].pop("num_classes"), "dataset.num_classes", "missing"),
    (lambda s: s["dataset"].update(name="msrc"), "dataset",
     "given by the registered dataset 'msrc'"),
    (lambda s: s["dataset"].update(ignore_label=2), "dataset", "collides with class 2"),
    (lambda s: s["partitions"]["1/4"].update(num_labeled=3), "partitions.1/4",
     "exactly one of denominator and num_labeled"),
    (lambda s: s["partitions"]["1/4"].update(labeled="lab"), "partitions.1/4.labeled",
     "must contain {seed}"),
    (lambda s: s["partitions"]["one"].update(labeled="lab_0"), "partitions.one",
     "'lab_0' is used twice"),
    (lambda s: s["partitions"]["1/4"].pop("seeds"), "partitions.1/4",
     "exactly one of seeds"),
    (lambda s: s["arms"][0].update(partition="1/3"), "arms[0] (S).partition",
     "unknown partition '1/3'"),
    (lambda s: s["arms"][0].update(seeds=[0, 7]), "arms[0] (S).seeds",
     "seeds [7] have no draw"),
    (lambda s: s["arms"][0].update(seeds=[]), "arms[0] (S).seeds", "non-empty list"),
    (lambda s: s["arms"][1].update(id="S"), "arms[1].id", "'S' is used twice"),
    (lambda s: s["arms"][0].update(flagfile="/nonexistent.flags"), "arms[0] (S).flagfile",
     "/nonexistent.flags does not exist"),
    (lambda s: s["arms"][1].update(partition="all"), "arms[1] (P).partition",
     "PseudoSeg arm needs a partition"),
    (lambda s: s.update(pairs=[["P", "Q"]]), "pairs[0]", "unknown arm 'Q'"),
    (lambda s: s.update(pairs=[["P"]]), "pairs[0]", "expected [arm, arm]"),
    (lambda s: s.update(report=[{"arm": "S", "seed": 0}]), "report[0]",
     "not a PseudoSeg arm"),
    (lambda s: s.update(report=[{"arm": "P", "seed": 9}]), "report[0].seed",
     "arm P has no seed 9"),
    (lambda s: s.update(eval_flags=["eval_crop_size=none"]), "eval_flags",
     "list of --flag=value"),
    (lambda s: s["arms"][0].update(draw=7), "arms[0] (S).draw",
     "partition '1/4' has no draw 7 (its draws: [0, 1, 2])"),
    (lambda s: s["arms"][2].update(draw=0), "arms[2] (F).draw", "partition 'all' has no draws"),
    (lambda s: s.update(curves=["Q"], curve_every_steps=1), "curves[0]", "unknown arm 'Q'"),
    (lambda s: s.update(curves=["S"]), "curves[0]", "arm S keeps no checkpoints"),
    (lambda s: s.update(curve_every_steps=2), "curve_every_steps",
     "2 gives arm S 3 curve points in its 7 steps; at least 6 are needed (at most 1)"),
    (lambda s: s["arms"][1].update(curve_every_steps=-1), "arms[1] (P).curve_every_steps",
     "expected an integer >= 0"),
    (lambda s: s.update(save_interval_steps="10"), "save_interval_steps", "expected int"),
    (lambda s: _colliding_run_names(s), "arms",
     "arms S and S_draw1 both name a run S_draw1_seed2"),
])
def test_spec_errors_name_the_file_and_field(tmp_path, change, field, message):
    path = _break(tmp_path, change)
    with pytest.raises(study.SpecError) as error:
        study.load_spec(path)
    text = str(error.value)
    assert text.startswith(f"{path}: {field}:"), text
    assert message in text, text


def test_flagfile_errors_name_the_flagfile(tmp_path):
    spec = base_spec(tmp_path)
    no_mode = write_flagfile(tmp_path / "no_mode.flags", "--dataset=tiny",
                             "--training_number_of_steps=3")
    other = write_flagfile(tmp_path / "other.flags", "--dataset=voc", "--mode=supervised",
                           "--training_number_of_steps=3")
    wrong_split = write_flagfile(tmp_path / "wrong.flags", f"--flagfile={tmp_path}/s.flags",
                                 "--train_split=unl_0")
    for flagfile, message in ((no_mode, "does not set --mode"),
                              (other, "sets --dataset=voc, the spec's dataset is 'tiny'"),
                              (wrong_split, "--train_split=unl_0, which is not a labeled "
                                            "split of partition '1/4'")):
        spec["arms"][0]["flagfile"] = flagfile
        path = save_spec(tmp_path, spec)
        with pytest.raises(study.SpecError, match="arms\\[0\\] \\(S\\).flagfile") as error:
            study.load_spec(path)
        assert message in str(error.value) and flagfile in str(error.value)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(study.SpecError, match="bad.json: not valid JSON"):
        study.load_spec(str(tmp_path / "bad.json"))
    with pytest.raises(study.SpecError, match="missing.json: no such study spec"):
        study.load_spec(str(tmp_path / "missing.json"))


def test_extra_flags_that_would_append_to_a_repeated_flag_are_refused(tmp_path):
    spec = base_spec(tmp_path)
    write_flagfile(tmp_path / "base.flags", "--dataset=tiny", "--training_number_of_steps=7",
                   "--atrous_rates=2", "--atrous_rates=4")
    path = save_spec(tmp_path, spec)
    with pytest.raises(study.SpecError, match="\\['--atrous_rates'\\] are repeated flags"):
        study.load_spec(path, ["--atrous_rates=3"])
    with pytest.raises(study.SpecError, match="repeat --extra_train_flags once per flag"):
        study.load_spec(path, ["--train_crop_size=97", "97"])


def test_read_flagfile_nests_and_reads_booleans(tmp_path):
    inner = write_flagfile(tmp_path / "inner.flags", "--a=1", "--b=2", "--weakly")
    outer = write_flagfile(tmp_path / "outer.flags", f"--flagfile={inner}", "--b=3",
                           "--nouse_attention", "--empty=")
    assert study.read_flagfile(outer) == {"a": "1", "b": "3", "weakly": "true",
                                          "use_attention": "false", "empty": ""}
    loop = tmp_path / "loop.flags"
    loop.write_text(f"--flagfile={loop}\n")
    with pytest.raises(study.SpecError, match="includes itself"):
        study.read_flagfile(str(loop))
    (tmp_path / "junk.flags").write_text("a=1\n")
    with pytest.raises(study.SpecError, match="junk.flags:1: expected --flag=value"):
        study.read_flagfile(str(tmp_path / "junk.flags"))


# -- statistics ---------------------------------------------------------------------


def test_summary_statistics_match_numpy(tmp_path):
    spec = study.load_spec(save_spec(tmp_path, base_spec(tmp_path)))
    s = {0: 0.40, 1: 0.45, 2: 0.38}
    p = {0: 0.47, 1: 0.46, 2: 0.49}
    results = {f"S_seed{k}": result("S", k, v, [v, v / 2, None]) for k, v in s.items()}
    results.update({f"P_seed{k}": result("P", k, v, [v, 0.1, 0.3]) for k, v in p.items()})
    results["F_seed0"] = result("F", 0, 0.55)
    summary = study.summarize(spec, results)
    arm_s = summary["arms"]["S"]["splits"]["val"]
    values = 100 * np.array([s[0], s[1], s[2]])
    assert arm_s["miou_mean"] == pytest.approx(values.mean())
    assert arm_s["miou_std"] == pytest.approx(values.std(ddof=1))
    assert arm_s["n"] == 3
    np.testing.assert_allclose(arm_s["per_class_iou_mean"][:2],
                               [values.mean(), values.mean() / 2])
    assert arm_s["per_class_iou_mean"][2] is None  # absent from every seed's val
    pair = next(x for x in summary["pairs"] if (x["a"], x["b"]) == ("P", "S"))
    differences = 100 * (np.array([p[0], p[1], p[2]]) - np.array([s[0], s[1], s[2]]))
    assert pair["seeds"] == [0, 1, 2]
    np.testing.assert_allclose([pair["differences"][str(k)] for k in range(3)], differences)
    assert pair["mean"] == pytest.approx(differences.mean())
    assert pair["std"] == pytest.approx(differences.std(ddof=1))
    assert pair["min"] == pytest.approx(differences.min())
    assert pair["all_positive"] is True
    # F has one seed: the pair F - S uses seed 0 only, without a std.
    single = next(x for x in summary["pairs"] if (x["a"], x["b"]) == ("F", "S"))
    assert single["seeds"] == [0] and single["std"] is None
    assert single["mean"] == pytest.approx(100 * (0.55 - s[0]))
    assert summary["arms"]["F"]["splits"]["val"]["miou_std"] is None
    assert summary["arms"]["X"]["splits"] == {}
    text = study.markdown(summary)
    assert f"| (S) | 3/3 | {values.mean():.2f} ± {values.std(ddof=1):.2f} |" in text
    assert f"| P − S | val | 3 |" in text
    assert f"{differences.mean():.2f} ± {differences.std(ddof=1):.2f}" in text


def test_partial_results_merge_into_one_summary(tmp_path):
    """Two invocations (e.g. --seeds=0 and --seeds=1,2) write their own result
    files; the summary is built from all of them, also across splits."""
    spec = study.load_spec(save_spec(tmp_path, base_spec(tmp_path)))
    results_dir = tmp_path / "work" / "results"
    results_dir.mkdir(parents=True)
    values = {("S", 0): 0.30, ("S", 1): 0.35, ("S", 2): 0.32, ("P", 0): 0.36, ("P", 2): 0.31}
    first = {("S", 0), ("P", 0)}
    for (arm, seed), miou in values.items():
        if (arm, seed) in first:
            (results_dir / f"{arm}_seed{seed}.json").write_text(
                json.dumps(result(arm, seed, miou, splits=("val", "test"))))
    partial = study.summarize(spec, study.load_results(str(results_dir)))
    assert partial["arms"]["S"]["seeds"] == [0]
    assert partial["splits"] == ["val", "test"]
    for (arm, seed), miou in values.items():
        if (arm, seed) not in first:
            (results_dir / f"{arm}_seed{seed}.json").write_text(
                json.dumps(result(arm, seed, miou)))
    (results_dir / "Z_seed0.json").write_text(json.dumps(result("Z", 0, 0.9)))
    summary, text = study.write_summary(spec, str(tmp_path / "work"))
    assert summary == json.loads((tmp_path / "work" / "summary.json").read_text())
    assert summary["arms"]["S"]["seeds"] == [0, 1, 2]
    assert summary["ignored_results"] == ["Z_seed0"]
    s = 100 * np.array([0.30, 0.35, 0.32])
    assert summary["arms"]["S"]["splits"]["val"]["miou_mean"] == pytest.approx(s.mean())
    assert summary["arms"]["S"]["splits"]["test"]["n"] == 1
    pair = next(x for x in summary["pairs"]
                if (x["a"], x["b"], x["split"]) == ("P", "S", "val"))
    assert pair["seeds"] == [0, 2]  # P has no seed 1 yet
    differences = 100 * np.array([0.36 - 0.30, 0.31 - 0.32])
    assert pair["mean"] == pytest.approx(differences.mean())
    assert pair["std"] == pytest.approx(differences.std(ddof=1))
    assert pair["all_positive"] is False
    assert (tmp_path / "work" / "summary.md").read_text() == text
    (results_dir / "broken.json").write_text(json.dumps({"arm": "S"}))
    with pytest.raises(ValueError, match="broken.json lacks 'seed'"):
        study.load_results(str(results_dir))


def test_an_arm_with_a_fixed_draw_varies_the_training_seed_only(tmp_path):
    """``draw``: every seed trains on the same labeled draw; run names stay unique, and
    pairs match runs with the same draw and training seed."""
    spec = base_spec(tmp_path)
    spec["arms"] += [
        {"id": "S_stab", "title": "(S) draw 1", "flagfile": spec["arms"][0]["flagfile"],
         "partition": "1/4", "seeds": [0, 1, 5], "draw": 1},
        {"id": "P_stab", "title": "(P) draw 1", "flagfile": spec["arms"][1]["flagfile"],
         "partition": "1/4", "seeds": [0, 1, 5], "draw": 1}]
    spec["pairs"] = [["P_stab", "S_stab"], ["S_stab", "S"], ["F", "S_stab"]]
    spec = study.load_spec(save_spec(tmp_path, spec))
    runs = {r.name: r for r in study.plan_runs(spec, ["S", "S_stab", "P_stab"])}
    assert sorted(runs) == ["P_stab_draw1_seed0", "P_stab_draw1_seed1", "P_stab_draw1_seed5",
                            "S_seed0", "S_seed1", "S_seed2", "S_stab_draw1_seed0",
                            "S_stab_draw1_seed1", "S_stab_draw1_seed5"]
    stab = runs["P_stab_draw1_seed5"]
    assert (stab.train_split, stab.unlabeled_split, stab.draw) == ("lab_1", "unl_1", 1)
    assert runs["S_seed2"].draw == 2
    command = study.train_command(stab, "/w", "/w/records")
    assert "--seed=5" in command and "--train_split=lab_1" in command
    assert "--train_logdir=/w/runs/P_stab_draw1_seed5" in command
    values = {("S", 0, 0): 0.30, ("S", 1, 1): 0.33, ("S", 2, 2): 0.31,
              ("S_stab", 1, 0): 0.40, ("S_stab", 1, 1): 0.41, ("S_stab", 1, 5): 0.43,
              ("P_stab", 1, 0): 0.45, ("P_stab", 1, 1): 0.42, ("P_stab", 1, 5): 0.50,
              ("F", None, 0): 0.60}
    results = {}
    for (arm, draw, seed), miou in values.items():
        results[f"{arm}_{draw}_{seed}"] = {**result(arm, seed, miou), "draw": draw}
    summary = study.summarize(spec, results)
    pairs = {(p["a"], p["b"]): p for p in summary["pairs"]}
    stab_pair = pairs[("P_stab", "S_stab")]
    assert stab_pair["seeds"] == [0, 1, 5] and stab_pair["draws"] == {"0": 1, "1": 1, "5": 1}
    np.testing.assert_allclose(list(stab_pair["differences"].values()), [5.0, 1.0, 7.0])
    # (S_stab) and (S) share a draw at training seed 1 only.
    assert pairs[("S_stab", "S")]["seeds"] == [1]
    assert pairs[("S_stab", "S")]["unpaired_seeds"] == [0]
    assert pairs[("S_stab", "S")]["differences"]["1"] == pytest.approx(8.0)
    # The whole training split has no draw: (F) pairs by training seed.
    assert pairs[("F", "S_stab")]["seeds"] == [0]
    text = study.markdown(summary)
    assert "| (S) draw 1 (draw 1) | 3/3 |" in text


def _per_image_set(rng, num_images, num_classes):
    """Per-image confusion matrices with classes missing from some images and class
    ``num_classes - 1`` absent from all (IoU undefined: left out of the mean)."""
    confusion = rng.integers(0, 30, (num_images, num_classes, num_classes))
    confusion[:, -1, :] = 0
    confusion[:, :, -1] = 0
    confusion[rng.random(num_images) < 0.3, 1, :] = 0
    return confusion


def _numpy_interval(per_image_runs, combine, samples=1000, seed=0):
    """The documented procedure, image by image with core.metrics: rng.integers draws
    the resampled indices, each resample's mIoU from its summed confusion matrix."""
    from core.metrics import iou_from_confusion

    num_images = len(per_image_runs[0])
    indices = np.random.default_rng(seed).integers(0, num_images, (samples, num_images))
    values = [combine([100 * iou_from_confusion(run[rows].sum(0))[0] for run in per_image_runs])
              for rows in indices]
    return np.percentile(values, [2.5, 97.5])


def test_bootstrap_intervals_match_a_numpy_recomputation(tmp_path):
    """Runs, arm means and seed-paired differences get percentile intervals over
    images, all from the same resamples of the images (sorted by id, whatever the
    order eval.py wrote them in)."""
    from core.evaluation import write_per_image_confusion
    from core.metrics import iou_from_confusion

    spec = study.load_spec(save_spec(tmp_path, base_spec(tmp_path)))
    results_dir = tmp_path / "work" / "results"
    rng = np.random.default_rng(3)
    ids = [f"img_{i:02d}" for i in range(12)]
    sets = {}
    for arm in ("S", "P"):
        for seed in (0, 1):
            per_image = _per_image_set(rng, len(ids), 4)
            sets[arm, seed] = per_image
            order = rng.permutation(len(ids))  # eval.py's order is not the ids' order
            relative = f"per_image/{arm}_seed{seed}.val.npz"
            write_per_image_confusion(str(results_dir / relative), [ids[i] for i in order],
                                      per_image[order], evaluated=f"/runs/{arm}{seed}/ckpt-7")
            miou = iou_from_confusion(per_image.sum(0))[0]
            entry = result(arm, seed, miou)
            entry["eval"]["val"].update(per_image_confusion=relative,
                                        checkpoint=f"/runs/{arm}{seed}/ckpt-7")
            (results_dir / f"{arm}_seed{seed}.json").write_text(json.dumps(entry))
    summary, text = study.write_summary(spec, str(tmp_path / "work"))
    arm_s = summary["arms"]["S"]["splits"]["val"]
    for seed in (0, 1):
        np.testing.assert_allclose(arm_s["miou_ci"][str(seed)],
                                   _numpy_interval([sets["S", seed]], lambda m: m[0]))
    np.testing.assert_allclose(arm_s["miou_mean_ci"],
                               _numpy_interval([sets["S", 0], sets["S", 1]], np.mean))
    pair = next(p for p in summary["pairs"] if (p["a"], p["b"]) == ("P", "S"))
    np.testing.assert_allclose(pair["differences_ci"]["1"],
                               _numpy_interval([sets["P", 1], sets["S", 1]],
                                               lambda m: m[0] - m[1]))
    np.testing.assert_allclose(
        pair["mean_ci"], _numpy_interval([sets["P", 0], sets["S", 0], sets["P", 1],
                                          sets["S", 1]],
                                         lambda m: ((m[0] - m[1]) + (m[2] - m[3])) / 2))
    low, high = arm_s["miou_ci"]["0"]
    assert f"0: {arm_s['miou']['0']:.2f} [{low:.2f}, {high:.2f}]" in text
    low, high = pair["mean_ci"]
    assert f"{pair['mean']:+.2f} ± {pair['std']:.2f} [{low:+.2f}, {high:+.2f}]" in text
    assert summary["bootstrap"]["samples"] == 1000 and summary["bootstrap"]["problems"] == []
    # A run whose per-image file is of another checkpoint gets no interval, with a note.
    entry = json.loads((results_dir / "P_seed1.json").read_text())
    entry["eval"]["val"]["checkpoint"] = "/runs/P1/ckpt-9"
    (results_dir / "P_seed1.json").write_text(json.dumps(entry))
    summary, text = study.write_summary(spec, str(tmp_path / "work"))
    assert summary["arms"]["P"]["splits"]["val"]["miou_ci"]["1"] is None
    assert summary["arms"]["P"]["splits"]["val"]["miou_mean_ci"] is None
    assert "ckpt-7, the result of /runs/P1/ckpt-9" in text


def test_learning_curves_are_summarised_and_drawn(tmp_path):
    spec = base_spec(tmp_path, curve_every_steps=1, curves=["S", "P"])
    spec = study.load_spec(save_spec(tmp_path, spec))
    assert spec.arms["S"].curve_every_steps == 1
    assert "--keep_checkpoint_steps=1" in study.train_command(study.plan_runs(spec)[0], "/w",
                                                              "/w/r")
    results_dir = tmp_path / "work" / "results"
    results_dir.mkdir(parents=True)
    curves = {0: [0.10, 0.20, 0.30, 0.35, 0.38, 0.39, 0.40],
              1: [0.12, 0.22, 0.28, 0.33, 0.37, 0.37, 0.36]}
    for seed, values in curves.items():
        entry = result("S", seed, values[-1])
        entry["curve"] = [{"step": step, "miou": {"val": v}}
                          for step, v in enumerate(values, 1)]
        (results_dir / f"S_seed{seed}.json").write_text(json.dumps(entry))
    summary, text = study.write_summary(spec, str(tmp_path / "work"))
    curve = summary["arms"]["S"]["curve"]["val"]
    assert curve["steps"] == list(range(1, 8))
    np.testing.assert_allclose(curve["mean"], 100 * np.mean(list(curves.values()), axis=0))
    # The last quarter of 7 steps starts at step 6 (>= 5.25): final minus step 6.
    assert curve["last_quarter"]["0"]["from_step"] == 6
    assert curve["last_quarter"]["1"]["change"] == pytest.approx(100 * (0.36 - 0.37))
    assert curve["last_quarter_change_mean"] == pytest.approx(100 * (0.01 - 0.01) / 2)
    assert summary["arms"]["P"]["curve"] is None
    assert summary["learning_curves_figure"] == "learning_curves.png"
    assert (tmp_path / "work" / "learning_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| S | val | 1: 11.00, 2: 21.00," in text


# -- end to end ---------------------------------------------------------------------


def write_source(root, counts=(("train", 8), ("val", 2)), size=(40, 40), num_classes=3):
    """A tiny dataset folder: images/<split>/<id>.png, labels/<split>/<id>.png, <split>.txt."""
    from datasets import fake_sources

    rng = np.random.default_rng(0)
    for split, count in counts:
        ids = []
        for index in range(count):
            image_id = f"{split}_{index:02d}"
            fake_sources.save_png(str(root / "images" / split / f"{image_id}.png"),
                                  fake_sources.random_image(rng, *size))
            mask = fake_sources.random_mask(rng, *size, range(num_classes))
            mask[:2] = 255
            fake_sources.save_png(str(root / "labels" / split / f"{image_id}.png"), mask)
            ids.append(image_id)
        (root / f"{split}.txt").write_text("\n".join(ids) + "\n")


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """A tiny study on generated images, run by benchmarks/study.py: (S), (P) and
    (S_stab) (draw 0, training seeds 0-2, so S_stab_draw0_seed0 duplicates
    S_seed0), two runs side by side; the first invocation is killed while (S)
    trains, the second resumes it and finishes the study."""
    tmp_path = tmp_path_factory.mktemp("tiny_study")
    write_source(tmp_path / "source")
    base = write_flagfile(
        tmp_path / "base.flags", "--dataset=tiny", "--model_variant=mobilenet_v2",
        "--decoder_output_stride=4", "--train_crop_size=33,33", "--train_batch_size=2",
        "--training_number_of_steps=6", "--base_learning_rate=0.01", "--cutout_size=8",
        "--log_steps=1", "--export=false")
    spec = {
        "description": "tiny",
        "dataset": {"name": "tiny", "source_dir": str(tmp_path / "source"), "num_classes": 3,
                    "ignore_label": 255, "class_names": ["bg", "a", "b"], "num_shards": 1},
        "partitions": {"1/4": {"denominator": 4, "seeds": [0], "labeled": "lab_{seed}",
                               "unlabeled": "unl_{seed}"}},
        "arms": [
            {"id": "S", "title": "(S)", "partition": "1/4", "seeds": [0],
             "flagfile": write_flagfile(tmp_path / "s.flags", f"--flagfile={base}",
                                        "--mode=supervised")},
            {"id": "P", "title": "(P)", "partition": "1/4", "seeds": [0],
             "curve_every_steps": 0,  # no curve, 2 steps: the test's time goes to (S)
             "flagfile": write_flagfile(tmp_path / "p.flags", f"--flagfile={base}",
                                        "--mode=pseudoseg", "--training_number_of_steps=2")},
            {"id": "S_stab", "title": "(S) draw 0", "partition": "1/4", "seeds": [0, 1, 2],
             "draw": 0, "flagfile": str(tmp_path / "s.flags")}],
        "pairs": [["P", "S"], ["S_stab", "S"]],
        "report": [{"arm": "P", "seed": 0}],
        "eval_flags": ["--eval_crop_size=none"],
        "curve_every_steps": 1, "curves": ["S"], "save_interval_steps": 1,
    }
    spec_path = save_spec(tmp_path, spec)
    work = tmp_path / "work"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
    start = time.monotonic()
    args = [sys.executable, "benchmarks/study.py", f"--spec={spec_path}", f"--work_dir={work}",
            "--parallel=2"]
    s_run = work / "runs" / "S_seed0"
    with open(tmp_path / "killed.log", "w") as log:
        killed = subprocess.Popen(args, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)  # its own group: killed with its runs
        deadline = time.monotonic() + 900
        while not (s_run / "checkpoint").exists() and time.monotonic() < deadline:
            assert killed.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
            time.sleep(0.05)
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait()
    killed_after = time.monotonic() - start
    import tensorflow as tf

    killed_at = int(tf.train.latest_checkpoint(str(s_run)).rsplit("-", 1)[-1])
    assert 1 <= killed_at < 6, "(S) finished before the kill: nothing to resume"
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    print(f"tiny study: {time.monotonic() - start:.0f} s")
    return types.SimpleNamespace(root=tmp_path, work=work, spec_path=spec_path, env=env,
                                 killed_at=killed_at, killed_after=killed_after,
                                 killed_log=(tmp_path / "killed.log")
                                 .read_text(), done=done)


def test_a_tiny_study_runs_end_to_end(tiny_study):
    """Data, splits, runs side by side (supervised and PseudoSeg, 6 steps, a
    checkpoint every step and a kept one for the curve), killed with the runner
    mid-training; the next invocation counts the killed training's time and
    resumes (S) at its last checkpoint, then
    evaluates (per-image matrices), evaluates the curve, reports and summarises;
    a third invocation only evaluates a new split, final checkpoint and curve."""
    work, spec_path, env = tiny_study.work, tiny_study.spec_path, tiny_study.env
    killed_at, done = tiny_study.killed_at, tiny_study.done
    s_run = work / "runs" / "S_seed0"
    assert f"S_seed0: resuming from ckpt-{killed_at}" in done.stdout
    assert f"resumed from {s_run}/ckpt-{killed_at}; step {killed_at} of 6" in (
        work / "logs" / "S_seed0.train.log").read_text()
    s_result = json.loads((work / "results" / "S_seed0.json").read_text())
    killed, resumed = s_result["train_invocations"]
    assert resumed["resumed_from"] == f"ckpt-{killed_at}" and not resumed["failed"]
    # The killed invocation's time, from its start to its log's last write, counts.
    assert killed["killed"] and killed["failed"] and "running" not in killed
    assert 0 < killed["seconds"] <= tiny_study.killed_after + 1
    assert s_result["seconds"]["train"] == pytest.approx(
        killed["seconds"] + resumed["seconds"], abs=0.1)
    # The curve: kept steps 1..5 evaluated by one eval.py, the final step from the main one.
    assert [p["step"] for p in s_result["curve"]] == [1, 2, 3, 4, 5, 6]
    assert s_result["curve"][-1]["miou"]["val"] == s_result["eval"]["val"]["miou"]
    assert "--checkpoint_path=" in (work / "logs" / "S_seed0.curve.log").read_text()
    # Per-image confusion matrices: every val image once, summing to the split's.
    from core.evaluation import read_per_image_confusion

    per_image = read_per_image_confusion(
        str(work / "results" / s_result["eval"]["val"]["per_image_confusion"]))
    assert sorted(per_image["image_ids"]) == ["val_00", "val_01"]
    np.testing.assert_array_equal(
        per_image["confusion"].sum(0),
        json.loads((s_run / "eval_val.json").read_text())["confusion_matrix"])
    assert (work / "splits" / "lab_0.txt").read_text().count("\n") == 2
    summary = json.loads((work / "summary.json").read_text())
    assert summary["arms"]["S"]["seeds"] == [0] and summary["arms"]["P"]["seeds"] == [0]
    assert 0 <= summary["arms"]["P"]["splits"]["val"]["miou_mean"] <= 100
    assert summary["pairs"][0]["seeds"] == [0]
    report = summary["pseudo_label_reports"][0]
    assert report["split"] == "unl_0" and set(report["sources"]) == {"decoder", "sgc", "fused"}
    p_result = json.loads((work / "results" / "P_seed0.json").read_text())
    assert p_result["train_split"] == "lab_0" and p_result["unlabeled_split"] == "unl_0"
    assert p_result["initialization"]["source"] == "random"
    assert p_result["seconds"]["train"] > 0 and p_result["train_invocations"][0]["threads"] >= 1
    assert "--train_split_cls=unl_0" in p_result["train_command"]
    assert "| (P) | 1/1 |" in (work / "summary.md").read_text()
    low, high = summary["arms"]["P"]["splits"]["val"]["miou_ci"]["0"]
    assert 0 <= low <= high <= 100
    assert summary["arms"]["S"]["curve"]["val"]["steps"] == [1, 2, 3, 4, 5, 6]
    assert summary["arms"]["P"]["curve"] is None and p_result["curve"] is None
    assert (work / "learning_curves.png").exists()
    # A new split in the records directory: a second invocation evaluates only it.
    for path in (work / "records").glob("val-*"):
        os.link(path, path.with_name(path.name.replace("val-", "extra-")))
    again = subprocess.run([sys.executable, "benchmarks/study.py", f"--spec={spec_path}",
                            f"--work_dir={work}", "--arms=S", "--eval_splits=val,extra"],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "train.py" not in again.stdout and "S_seed0: trained" in again.stdout
    assert "--eval_split=extra" in again.stdout and "--eval_split=val " not in again.stdout
    assert again.stdout.count("--checkpoint_path=") == 1  # the curve on extra only
    summary = json.loads((work / "summary.json").read_text())
    assert summary["arms"]["S"]["splits"]["extra"]["miou_mean"] == pytest.approx(
        summary["arms"]["S"]["splits"]["val"]["miou_mean"])
    # The same images under another name: the same curve, and the same intervals.
    curve = json.loads((work / "results" / "S_seed0.json").read_text())["curve"]
    assert all(p["miou"]["extra"] == p["miou"]["val"] for p in curve) and len(curve) == 6
    assert summary["arms"]["S"]["splits"]["extra"]["miou_ci"] == summary["arms"]["S"][
        "splits"]["val"]["miou_ci"]
    missing = subprocess.run([sys.executable, "benchmarks/study.py", f"--spec={spec_path}",
                              f"--work_dir={work}", "--arms=S", "--eval_splits=nope"],
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    assert missing.returncode == 1 and "--eval_splits: no records for ['nope']" in missing.stderr


def _trained_runs(output):
    """The runs whose train.py the runner started, from its log lines ``$ train.py ...``."""
    return set(re.findall(r"^\[[\d:]+\] \$ train\.py .*--train_logdir=\S*/runs/(\w+) ",
                          output, re.M))


def test_a_duplicate_run_is_trained_once_and_shares_its_result(tiny_study, capsys):
    """S_stab_draw0_seed0 (draw 0, training seed 0) is S_seed0's training: it is not
    trained (no train.py, no logdir) but gets a copy of S_seed0's result under its own
    name, so the summary's S_stab arm has 3 seeds, seed 0 with S's mIoU, interval and
    curve. An invocation of S_stab alone, S_seed0 done, refills it without training."""
    work = tiny_study.work
    assert _trained_runs(tiny_study.killed_log + tiny_study.done.stdout) == {
        "S_seed0", "P_seed0", "S_stab_draw0_seed1", "S_stab_draw0_seed2"}
    assert "S_stab_draw0_seed0: alias of S_seed0 (the same train.py command but for the " \
           "logdir" in tiny_study.done.stdout
    assert not (work / "runs" / "S_stab_draw0_seed0").exists()
    assert not (work / "logs" / "S_stab_draw0_seed0.train.log").exists()
    results = work / "results"
    canonical = json.loads((results / "S_seed0.json").read_text())
    alias = json.loads((results / "S_stab_draw0_seed0.json").read_text())
    assert alias["alias_of"] == "S_seed0" and "alias_of" not in canonical
    assert (alias["run"], alias["arm"], alias["seed"], alias["draw"], alias["title"]) == (
        "S_stab_draw0_seed0", "S_stab", 0, 0, "(S) draw 0")
    assert alias["eval"]["val"]["miou"] == canonical["eval"]["val"]["miou"]
    assert alias["eval"]["val"]["per_image_confusion"] == "per_image/S_stab_draw0_seed0.val.npz"
    assert (results / "per_image" / "S_stab_draw0_seed0.val.npz").read_bytes() == (
        results / "per_image" / "S_seed0.val.npz").read_bytes()
    assert [(p["step"], p["miou"]["val"]) for p in alias["curve"]] == [
        (p["step"], p["miou"]["val"]) for p in canonical["curve"]]
    summary = json.loads((work / "summary.json").read_text())
    stab, s = summary["arms"]["S_stab"], summary["arms"]["S"]
    assert stab["seeds"] == [0, 1, 2] and stab["splits"]["val"]["n"] == 3
    assert stab["splits"]["val"]["miou"]["0"] == s["splits"]["val"]["miou"]["0"]
    assert stab["splits"]["val"]["miou_ci"]["0"] == s["splits"]["val"]["miou_ci"]["0"]
    assert stab["splits"]["val"]["miou_ci"]["0"] is not None
    assert stab["curve"]["val"]["per_seed"]["0"] == s["curve"]["val"]["per_seed"]["0"]
    assert len(stab["curve"]["val"]["per_seed"]) == 3
    pair = next(p for p in summary["pairs"] if (p["a"], p["b"], p["split"]) == (
        "S_stab", "S", "val"))
    assert pair["seeds"] == [0] and pair["differences"] == {"0": 0.0}
    assert pair["differences_ci"]["0"] == [0.0, 0.0]
    assert next(r for r in summary["runs"] if r["run"] == "S_stab_draw0_seed0")[
        "alias_of"] == "S_seed0"
    assert "| S_stab_draw0_seed0 (= S_seed0) |" in (work / "summary.md").read_text()
    # Another invocation: S_stab's seed 0 alone, its result gone; S_seed0 (trained) is
    # brought up to date under its own name, nothing runs, the alias is filled again.
    (results / "S_stab_draw0_seed0.json").unlink()
    (results / "per_image" / "S_stab_draw0_seed0.val.npz").unlink()
    spec = study.load_spec(tiny_study.spec_path)
    capsys.readouterr()
    runner = study.Runner(spec, str(work))
    assert runner.execute_all(study.plan_runs(spec, ["S_stab"], [0])) == []
    logged = capsys.readouterr().out
    assert "S_seed0 is executed in this invocation, under its own name" in logged
    assert "S_seed0: trained (ckpt-6)" in logged and "$ " not in logged  # no command at all
    refilled = json.loads((results / "S_stab_draw0_seed0.json").read_text())
    assert refilled["alias_of"] == "S_seed0"
    assert refilled["eval"]["val"]["miou"] == canonical["eval"]["val"]["miou"]
    assert (results / "per_image" / "S_stab_draw0_seed0.val.npz").exists()
    assert not (work / "runs" / "S_stab_draw0_seed0").exists()


def test_a_run_finished_in_another_session_is_not_retrained(tiny_study, tmp_path, capsys):
    """A new session has only the committed ``results/`` of an earlier part: its
    finished runs (final step, every eval split, curve, report) are not trained
    again in a new work dir, and a run whose result lacks what this invocation
    asks for (another eval split, another flag) is."""
    import shutil

    work = tmp_path / "new_session"
    shutil.copytree(tiny_study.work / "results", work / "results")
    spec = study.load_spec(tiny_study.spec_path)
    runner = study.Runner(spec, str(work))
    capsys.readouterr()
    assert runner.execute_all(study.plan_runs(spec, ["S", "P"], [0])) == []
    logged = capsys.readouterr().out
    assert "S_seed0: finished in another session" in logged
    assert "P_seed0: finished in another session" in logged
    assert "$ " not in logged  # no command at all
    assert not (work / "runs" / "S_seed0").exists() and not (work / "runs" / "P_seed0").exists()
    s_run, p_run = study.plan_runs(spec, ["S", "P"], [0])
    result = json.loads((work / "results" / "S_seed0.json").read_text())
    assert runner.finished_elsewhere(s_run, result)
    assert not study.Runner(spec, str(work), eval_splits=("val", "nope")).finished_elsewhere(
        s_run, result)
    assert not study.Runner(spec, str(work), extra_train_flags=("--weight_decay=0",)
                            ).finished_elsewhere(s_run, result)
    assert not runner.finished_elsewhere(s_run, {**result, "checkpoint": "x/ckpt-5"})
    assert not runner.finished_elsewhere(s_run, {**result, "curve": result["curve"][1:]})
    p_result = json.loads((work / "results" / "P_seed0.json").read_text())
    assert not runner.finished_elsewhere(p_run, {**p_result, "pseudo_label_report": None})
    (work / "results" / result["eval"]["val"]["per_image_confusion"]).unlink()
    assert not runner.finished_elsewhere(s_run, result)


def test_duplicate_runs_are_found_across_arms_and_invocations(tmp_path):
    """Runs whose train.py commands differ only in the logdir: the later ones (in spec
    order) are aliases of the first, also when an invocation selects only them (dry
    run: the canonical runs are added, under their own names); the report of an
    alias is the canonical run's; a duplicate with a result of its own keeps it."""
    write_source(tmp_path / "source", counts=(("train", 4), ("val", 1)), size=(8, 8))
    spec = base_spec(tmp_path, report=[{"arm": "P_stab", "seed": 0}])
    s_flags, p_flags = spec["arms"][0]["flagfile"], spec["arms"][1]["flagfile"]
    spec["arms"] += [
        {"id": "S_stab", "title": "(S) draw 0", "flagfile": s_flags, "partition": "1/4",
         "seeds": [0, 1, 2], "draw": 0},
        {"id": "P_stab", "title": "(P) draw 0", "flagfile": p_flags, "partition": "1/4",
         "seeds": [0], "draw": 0},
        # Keeps checkpoints (--keep_checkpoint_steps=1): another command, not an alias.
        {"id": "S_kept", "title": "(S) kept", "flagfile": s_flags, "partition": "1/4",
         "seeds": [0], "draw": 0, "curve_every_steps": 1}]
    spec_path = save_spec(tmp_path, spec)
    spec = study.load_spec(spec_path)
    work = tmp_path / "work"
    runner = study.Runner(spec, str(work), dry_run=True)
    assert {alias: canonical.name for alias, canonical in runner.canonical_of.items()} == {
        "S_stab_draw0_seed0": "S_seed0", "P_stab_draw0_seed0": "P_seed0"}
    assert runner.reported(runner.canonical_of["P_stab_draw0_seed0"])
    # The command line's dry run names the aliases and the runs it adds for them.
    dry = subprocess.run([sys.executable, "benchmarks/study.py", f"--spec={spec_path}",
                          f"--work_dir={work}", "--arms=S_stab,P_stab,S_kept", "--dry_run"],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert dry.returncode == 0, dry.stdout[-3000:] + dry.stderr[-3000:]
    for alias, canonical in (("S_stab_draw0_seed0", "S_seed0"), ("P_stab_draw0_seed0", "P_seed0")):
        assert (f"{alias}: alias of {canonical} (the same train.py command but for the logdir, "
                f"the same eval splits): not trained, gets a copy of {canonical}'s result; "
                f"{canonical} is executed in this invocation, under its own name") in dry.stdout
    assert _trained_runs(dry.stdout) == {"S_seed0", "P_seed0", "S_stab_draw0_seed1",
                                         "S_stab_draw0_seed2", "S_kept_draw0_seed0"}
    assert f"--checkpoint_dir={work}/runs/P_seed0 --dataset_dir={work}/records " \
           f"--split=unl_0" in dry.stdout  # P_stab's report, by P_seed0
    assert not (work / "results").exists()
    # A duplicate trained on its own before (a result without alias_of) stays a run.
    (work / "results").mkdir()
    (work / "results" / "S_stab_draw0_seed0.json").write_text(
        json.dumps(result("S_stab", 0, 0.3)))
    schedule = runner.schedule(study.plan_runs(spec, ["S_stab", "P_stab"]))
    assert [r.name for r in schedule.runs] == ["S_stab_draw0_seed0", "S_stab_draw0_seed1",
                                               "S_stab_draw0_seed2", "P_seed0"]
    assert [(a.name, c.name) for a, c in schedule.aliases] == [("P_stab_draw0_seed0",
                                                                 "P_seed0")]
    assert schedule.added == ["P_seed0"] and schedule.kept == ["S_stab_draw0_seed0"]


def test_eval_splits_in_the_source_folder_are_converted(tmp_path, capsys):
    """--eval_splits=val,test converts the source's test split too (dry run: the
    commands only), not a split the source does not have."""
    write_source(tmp_path / "source", counts=(("train", 4), ("val", 1), ("test", 1)),
                 size=(8, 8))
    spec = study.load_spec(save_spec(tmp_path, base_spec(tmp_path)))
    runner = study.Runner(spec, str(tmp_path / "work"), eval_splits=("val", "test", "other"),
                          dry_run=True)
    runner.prepare_data()
    logged = capsys.readouterr().out
    for split in ("val", "test"):
        assert f"--list_file={tmp_path}/source/{split}.txt --split_name={split} " in logged
    assert "--split_name=other" not in logged


def test_a_run_another_process_is_at_work_on_is_left_alone(tmp_path):
    """runs/<run>.lock, held by a runner and the commands it starts: a second runner
    (or one started while a killed runner's train.py still runs) does not touch the run."""
    import fcntl

    spec = base_spec(tmp_path)
    spec["arms"].append({"id": "S_stab", "title": "(S) draw 0", "partition": "1/4",
                         "seeds": [0], "draw": 0, "flagfile": spec["arms"][0]["flagfile"]})
    spec = study.load_spec(save_spec(tmp_path, spec))
    run = study.plan_runs(spec, ["S"], [0])[0]
    runner = study.Runner(spec, str(tmp_path / "work"))
    (tmp_path / "work" / "runs").mkdir(parents=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a'); "
         "fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)",
         str(tmp_path / "work" / "runs" / "S_seed0.lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(study.RunLocked, match="S_seed0: another process holds"):
            runner.execute(run)
        assert runner.execute_all([run]) == ["S_seed0"]
        # Its alias (S_stab_draw0_seed0 is the same training) fails with it.
        assert runner.execute_all(study.plan_runs(spec, ["S_stab"])) == [
            "S_seed0", "S_stab_draw0_seed0"]
    finally:
        holder.kill()
        holder.wait()
    assert not (tmp_path / "work" / "runs" / "S_seed0").exists()  # nothing was started
    with open(tmp_path / "work" / "runs" / "S_seed0.lock") as lock:  # released
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_demo_seeds_summary_pairs_by_seed(tmp_path):
    """benchmarks/demo_seeds.py: per-arm mean and sample std and the
    seed-paired difference, from the runs' eval_val.json (missing runs left out
    of the pairs)."""
    from benchmarks import demo_seeds

    mious = {"pseudoseg": {0: 0.61, 1: 0.55, 2: 0.70}, "supervised": {0: 0.60, 1: 0.58}}
    for arm, by_seed in mious.items():
        for seed, miou in by_seed.items():
            run = Path(demo_seeds.run_dir(str(tmp_path), arm, seed))
            run.mkdir()
            (run / "eval_val.json").write_text(json.dumps({"miou": miou}))
    summary = demo_seeds.summarize(str(tmp_path), [0, 1, 2])
    pseudoseg = [61.0, 55.0, 70.0]
    assert summary["arms"]["pseudoseg"]["mean"] == pytest.approx(np.mean(pseudoseg))
    assert summary["arms"]["pseudoseg"]["std"] == pytest.approx(np.std(pseudoseg, ddof=1))
    assert summary["arms"]["supervised"]["seeds"] == [0, 1]
    diff = summary["pseudoseg_minus_supervised"]
    assert diff["per_seed"] == pytest.approx([1.0, -3.0])
    assert diff["mean"] == pytest.approx(-1.0)
    assert diff["std"] == pytest.approx(np.std([1.0, -3.0], ddof=1))
    assert diff["all_positive"] is False
    table = demo_seeds.markdown(summary, [0, 1, 2])
    assert "| supervised (`configs/demo_supervised.flags`) | 60.00 | 58.00 | - | 59.00 ± 1.41 |" \
        in table
    assert "| PseudoSeg − supervised (seed-paired) | +1.00 | -3.00 | - | -1.00 ± 2.83 |" in table
    command = demo_seeds.train_command(str(tmp_path), "pseudoseg", 2)
    assert command[1:4] == ["train.py", "--flagfile=configs/demo.flags", "--seed=2"]
