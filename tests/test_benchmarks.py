"""The study and report scripts of benchmarks/ run end to end on a tiny budget (subprocesses, real files)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from stable_baselines3.common.save_util import load_from_pkl

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "mbpo_tom": {
        "learning_starts": 200, "gradient_steps": 1, "batch_size": 64, "ensemble_size": 3, "num_elites": 2,
        "dynamics_hidden_sizes": [32, 32], "model_train_freq": 100, "rollout_batch_size": 200, "model_max_epochs": 3,
        "policy_buffer_size": 100, "discriminator_steps": 10, "dual_steps": 10, "epoch_length": 200,
    },
    "sac": {"learning_starts": 200, "batch_size": 64},
}  # fmt: skip
TOM_ONLY = ("policy_buffer_size", "discriminator_steps", "dual_steps")
TINY["mbpo"] = {k: v for k, v in TINY["mbpo_tom"].items() if k not in TOM_ONLY}


def study(results: Path, checkpoints: Path, *extra: str, ok: bool = True) -> str:
    """Stdout (and stderr) of ``benchmarks/sample_efficiency.py``, which must succeed (``ok``) or fail."""
    command = [
        sys.executable, str(ROOT / "benchmarks" / "sample_efficiency.py"), "--algos", "mbpo_tom", "sac",
        "--envs", "Pendulum-v1", "--seeds", "0", "--eval-freq", "200", "--eval-episodes", "2", "--jobs", "2",
        "--results-dir", str(results), "--checkpoint-dir", str(checkpoints), "--override", json.dumps(TINY), *extra,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert (result.returncode == 0) == ok, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


@pytest.mark.slow
def test_study_never_overwrites_a_result_it_cannot_resume(tmp_path):
    results, checkpoints = tmp_path / "results", tmp_path / "checkpoints"
    sac = ("--algos", "sac")
    study(results, checkpoints, *sac, "--steps", "400")
    path = results / "sac_Pendulum-v1_seed0.json"
    kept = path.read_bytes()
    # a study started where the results are committed but the (uncommitted) checkpoints are not
    shutil.rmtree(checkpoints)
    out = study(results, checkpoints, *sac, "--steps", "400")
    assert "done (400 steps" in out and path.read_bytes() == kept
    out = study(results, checkpoints, *sac, "--steps", "600", ok=False)
    assert "has no checkpoint" in out and "--restart" in out and path.read_bytes() == kept
    # --restart runs it again from step 0; the old result stays until the new run has passed it
    out = study(results, checkpoints, *sac, "--steps", "600", "--restart", "--stop-after", "200")
    assert "step 200" in out and path.read_bytes() == kept
    out = study(results, checkpoints, *sac, "--steps", "600")
    assert "resuming at step 200" in out
    run = json.loads(path.read_text())
    assert [e["timesteps"] for e in run["evaluations"]] == [200, 400, 600] and run["resumed_at"] == [200]


@pytest.mark.slow
def test_study_resumes_after_interruption_with_the_same_evaluations(tmp_path):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    study(whole / "results", whole / "checkpoints", "--steps", "600")
    out = study(cut / "results", cut / "checkpoints", "--steps", "600", "--stop-after", "400")
    assert "step 400" in out and "step 600" not in out
    out = study(cut / "results", cut / "checkpoints", "--steps", "600")
    assert "resuming at step 400" in out
    for name in ["mbpo_tom_Pendulum-v1_seed0", "sac_Pendulum-v1_seed0"]:
        runs = [json.loads((d / "results" / f"{name}.json").read_text()) for d in (whole, cut)]
        assert [run["resumed_at"] for run in runs] == [[], [400]]
        # the versions (code, CPU) of every part of a resumed run
        assert [len(run.get("earlier_versions", [])) for run in runs] == [0, 1]
        assert runs[1]["earlier_versions"][0]["git_commit"] == runs[1]["versions"]["git_commit"]
        for run in runs:
            assert [e["timesteps"] for e in run["evaluations"]] == [200, 400, 600]
            assert all(len(e["returns"]) == 2 and e["wall_time_s"] > 0 for e in run["evaluations"])
            assert run["versions"]["git_commit"] and run["hyperparameters"]["learning_starts"] == 200
        # one checkpoint per run is kept (the newest), outside the results
        assert [p.name for p in (cut / "checkpoints" / name).iterdir()] == ["step_600"]
        # it holds every transition, also that of its own step (SB3 stores it after the callback's `_on_step`)
        for folder in (whole, cut):
            assert load_from_pkl(folder / "checkpoints" / name / "step_600" / "replay_buffer.pkl").pos == 600
    for folder in (whole, cut):
        # every model round's diagnostics, also those after resuming (the loaded agent learns its own model)
        tom = json.loads((folder / "results" / "mbpo_tom_Pendulum-v1_seed0.json").read_text())
        assert [r["step"] for r in tom["model_rounds"]] == [201, 301, 401, 501]
        assert [r["tom/active"] for r in tom["model_rounds"]] == [0, 1, 1, 1]
        assert all(0 <= r["tom/discriminator_accuracy"] <= 1 and r["model/epochs"] >= 1 for r in tom["model_rounds"][1:])
        # from the second round on: the model's error on the transitions collected since the round before
        assert "model/new_data_mse" not in tom["model_rounds"][0]
        assert all(r["model/new_data_mse"] > 0 and r["model/new_data_nll"] for r in tom["model_rounds"][1:])
    sac = json.loads((whole / "results" / "sac_Pendulum-v1_seed0.json").read_text())
    assert sac["model_rounds"] == [] and sac["hyperparameters"]["batch_size"] == 64
    # extending a finished run resumes it
    out = study(whole / "results", whole / "checkpoints", "--steps", "800", "--stop-after", "800")
    assert "resuming at step 600" in out
    extended = json.loads((whole / "results" / "sac_Pendulum-v1_seed0.json").read_text())
    assert [e["timesteps"] for e in extended["evaluations"]] == [200, 400, 600, 800]

    # a controlled model-learning comparison on the MBPO_TOM checkpoint: one round of MLE against TOM's (both schemes)
    (checkpoint,) = (whole / "checkpoints" / "mbpo_tom_Pendulum-v1_seed0").iterdir()
    out_json = tmp_path / "accuracy.json"
    script = str(ROOT / "benchmarks" / "model_accuracy.py")
    options = ["--fits", "2", "--fresh", "100", "--buffer-sample", "50", "--epochs", "2", "--json", str(out_json)]
    options += ["--variants", "mle", "tom", "tom_resample"]
    accuracy = subprocess.run([sys.executable, script, str(checkpoint), *options], capture_output=True, text=True)
    assert accuracy.returncode == 0, accuracy.stderr[-3000:]
    record = json.loads(out_json.read_text())
    assert record["step"] == 800 and record["fresh_transitions"] == 100
    variants = ("mle", "tom", "tom_resample")
    assert [(f["variant"], f["seed"]) for f in record["fits"]] == [(v, s) for s in (0, 1) for v in variants]
    for fit in record["fits"]:
        assert min(fit[where]["mse"] for where in ("fresh", "recent", "buffer")) > 0
        assert fit["logged"]["model/epochs"] == 2
        assert ("tom/weight_ess_fraction" in fit["logged"]) == fit["variant"].startswith("tom")
    fresh_mse = [fit["fresh"]["mse"] for fit in record["fits"][:3]]
    assert len(set(fresh_mse)) == 3  # the weights changed the fit, and the two schemes differ
    assert len(record["summary"]["fresh_mse"]["tom_over_mle_per_seed"]) == 2
    assert len(record["summary"]["fresh_mse"]["tom_resample_over_mle_per_seed"]) == 2
    for fit in record["fits"][1:3]:  # TOM's weights: where they put the new transitions, and on the buffer sample
        assert fit["fresh"]["mean_weight"] > 0 and fit["recent"]["mean_weight"] > 0
        assert len(fit["buffer_sample_weights"]) == 50 and min(fit["buffer_sample_weights"]) >= 0
    agreement = record["summary"]["tom_weight_agreement"]
    assert len(agreement["spearman"]) == 1 and -1 <= agreement["pearson"][0] <= 1
    (sac_checkpoint,) = (whole / "checkpoints" / "sac_Pendulum-v1_seed0").iterdir()
    refused = subprocess.run([sys.executable, script, str(sac_checkpoint)], capture_output=True, text=True)
    assert refused.returncode != 0 and "needs an MBPO or MBPO_TOM checkpoint" in refused.stderr
    # an MBPO checkpoint (its model trained 300 epochs every round): plain MLE only, from scratch or warm
    mbpo_study = tmp_path / "mbpo"
    trained = json.dumps({"mbpo": {**TINY["mbpo"], "model_max_epochs": 300, "model_patience": 300}})
    study(mbpo_study / "results", mbpo_study / "checkpoints", "--algos", "mbpo", "--steps", "400", "--override", trained)
    (mbpo_checkpoint,) = (mbpo_study / "checkpoints" / "mbpo_Pendulum-v1_seed0").iterdir()
    refused = subprocess.run([sys.executable, script, str(mbpo_checkpoint)], capture_output=True, text=True)
    assert refused.returncode != 0 and "TOM's variants need an MBPO_TOM checkpoint" in refused.stderr
    records = {}
    for warm in (False, True):
        out_json = tmp_path / f"accuracy_mbpo_{warm}.json"
        options = ["--fits", "1", "--fresh", "100", "--buffer-sample", "50", "--epochs", "2", "--variants", "mle"]
        options += ["--json", str(out_json), *(["--warm"] if warm else [])]
        mle_only = subprocess.run([sys.executable, script, str(mbpo_checkpoint), *options], capture_output=True, text=True)
        assert mle_only.returncode == 0, mle_only.stderr[-3000:]
        records[warm] = json.loads(out_json.read_text())
        assert records[warm]["warm"] == warm and [f["variant"] for f in records[warm]["fits"]] == ["mle"]
    # --warm: the round the run would do next, from the checkpoint's trained ensemble, beats 2 epochs from scratch
    assert records[True]["fits"][0]["fresh"]["mse"] < 0.5 * records[False]["fits"][0]["fresh"]["mse"]

    # the report turns the results into curves, TOM diagnostics and the summary table
    readme = whole / "README.md"
    readme.write_text("# Title\n\n<!-- study-results:start -->\nOLD BLOCK\n<!-- study-results:end -->\n\nafter\n")
    report = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "report.py"), "--results-dir", str(whole / "results"), "--readme", readme],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0, report.stderr[-3000:]
    names = ["curves_Pendulum-v1.png", "tom_diagnostics_Pendulum-v1.png", "model_error_Pendulum-v1.png", "summary.md"]
    for name in [*names, "summary.json"]:
        assert (whole / "results" / name).stat().st_size > 100, name
    assert "### Pendulum-v1" in report.stdout
    assert "Model error on each round's new real transitions" in report.stdout and "MBPO_TOM " in report.stdout
    # TOM's diagnostics, down to how many holdout transitions its weighted early stopping rests on
    assert "TOM's diagnostics over its rounds" in report.stdout and "holdout weight ess" in report.stdout
    diagnostics = json.loads((whole / "results" / "summary.json").read_text())["Pendulum-v1"]["tom_diagnostics"]
    assert 0 < diagnostics["model/holdout_weight_ess"]["min"] <= diagnostics["model/holdout_weight_ess"]["max"]
    assert 0 <= diagnostics["tom/discriminator_accuracy"]["median"] <= 1
    text = readme.read_text()
    assert "OLD BLOCK" not in text and text.endswith("after\n") and "(results/curves_Pendulum-v1.png)" in text
    assert "### Pendulum-v1" in text and "P(MBPO_TOM > MBPO)" not in text  # no MBPO run in this study


def test_report_statistics():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import numpy as np
    from report import bootstrap_ci, iqm, probability_of_improvement

    assert probability_of_improvement(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert probability_of_improvement(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == 0.5
    assert iqm(np.array([0.0, 1.0, 2.0, 100.0])) == 1.5
    low, high = bootstrap_ci(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), np.mean)
    assert 1.0 <= low < 3.0 < high <= 5.0


def test_report_paper_metric_is_the_best_evaluation_so_far_and_set_beside_the_papers_numbers():
    """The TOM paper plots the cumulative maximum of the evaluations: the report gives ours the same way."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from report import best_so_far, markdown, summarise

    def run(algo, seed, values):
        evaluations = [{"timesteps": 5_000 * (i + 1), "mean_return": v} for i, v in enumerate(values)]
        return {"algo": algo, "env": "Hopper-v4", "seed": seed, "evaluations": evaluations, "wall_time_s": 1.0}

    swinging = run("mbpo_tom", 0, [100.0, 900.0, 300.0, 400.0, 950.0, 200.0])
    assert [best_so_far(swinging, s) for s in (5_000, 10_000, 20_000, 25_000, 30_000)] == [100, 900, 900, 950, 950]
    assert best_so_far(swinging, 35_000) is None and best_so_far(swinging, 12_000) is None  # not reached, not evaluated
    runs = {"Hopper-v4": {"mbpo_tom": [swinging, run("mbpo_tom", 1, [0.0] * 5 + [1050.0])],
                          "mbpo": [run("mbpo", 0, [500.0] * 6)]}}  # fmt: skip
    paper = summarise(runs)["Hopper-v4"]["paper_metric"]
    assert paper["step"] == 25_000 and paper["paper"] == {"mbpo_tom": 900, "mbpo": 840}
    assert paper["algos"]["mbpo_tom"]["values"] == [950.0, 0.0] and paper["algos"]["mbpo_tom"]["mean"] == 475.0
    assert paper["algos"]["mbpo"]["values"] == [500.0]
    text = markdown(summarise(runs))
    assert "best evaluation so far" in text and "MBPO_TOM 475 [" in text and "(paper: about 900)" in text


@pytest.mark.parametrize("script", ["throughput.py", "hot_loops.py", "thread_layout.py", "memory.py", "learning.py"])
def test_benchmark_scripts_import_and_explain_themselves(script):
    """Every benchmark script imports against the current package (they are not otherwise run by the tests)."""
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--help"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "usage" in result.stdout


def test_code_lines_counts_code_only(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from code_lines import code_lines

    source = '"""Module doc."""\n\n# a comment\ndef f(x):\n    """Doc\n    on two lines."""\n    return (x +\n            1)\n'
    assert code_lines(source) == 3  # def, and the two lines of the return
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "code_lines.py"), str(ROOT / "sb3_tom")], capture_output=True, text=True
    )
    assert result.returncode == 0 and result.stdout.strip().endswith("total")


def test_report_reads_only_run_results(tmp_path):
    """``model_accuracy.py``'s JSONs share the results folder; the report's run loader leaves them out."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from report import load_runs

    run = {"algo": "mbpo", "env": "Hopper-v4", "seed": 0, "evaluations": []}
    (tmp_path / "mbpo_Hopper-v4_seed0.json").write_text(json.dumps(run))
    (tmp_path / "model_accuracy_Hopper-v4_seed0_8000.json").write_text(json.dumps({"env": "Hopper-v4", "fits": []}))
    runs = load_runs(tmp_path)
    assert list(runs) == ["Hopper-v4"] and runs["Hopper-v4"]["mbpo"] == [run] and list(runs["Hopper-v4"]) == ["mbpo"]


def test_termination_accuracy_script_scores_the_classifier_against_the_env(tmp_path):
    """``benchmarks/termination_accuracy.py`` on real Hopper-v4 transitions, tiny budget: one row per threshold."""
    out = tmp_path / "rows.json"
    command = [
        sys.executable, str(ROOT / "benchmarks" / "termination_accuracy.py"), "--envs", "Hopper-v4", "--transitions",
        "600", "--steps", "20", "--seeds", "0", "--json", str(out),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert [row["threshold"] for row in rows] == ["balanced", "prior log-odds"]
    for row in rows:
        assert 0 < row["terminals"] < 600 and row["terminal_rate"] == pytest.approx(row["terminals"] / 600)
        assert 0 <= row["false_terminals"] <= 600 - row["terminals"] and 0 <= row["missed_terminals"] <= row["terminals"]
    assert rows[1]["predicted_rate"] <= rows[0]["predicted_rate"]  # the prior's log-odds (< 0) only remove terminals
    assert "Hopper-v4 seed 0" in result.stdout


def test_whole_run_benchmark_runs_both_agents_from_step_0_and_reports_the_speedup_key():
    """``throughput.py --whole-run``'s measurement on a tiny whole run (HalfCheetah-v4, both agents from step 0)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from throughput import bench_whole_run

    results = bench_whole_run(200, threads=1)
    assert results["whole_run_window"] == [0, 200] and results["whole_run_learning_starts"] == 5000
    speedup = results["end_to_end_whole_run_speedup_vs_sb3_sac"]
    assert speedup == pytest.approx(results["whole_run_sac_window_s"] / results["whole_run_window_s"])
    assert results["whole_run_model_round_s"] == 0.0  # no model round before learning_starts
    assert 0 < results["whole_run_window_s"] and results["whole_run_peak_rss_mb"] > 100
