"""
Turn the runs of ``benchmarks/sample_efficiency.py`` into plots and tables for the README.

    python benchmarks/report.py                     # reads benchmarks/results/*.json, writes next to them

Writes into the results folder:

- ``curves_<env>.png``: evaluation return against env steps, one line per algorithm (mean over seeds, up to the
  last step every seed reached) with a 95% bootstrap band, and each seed as far as it ran as a faint line;
- ``tom_diagnostics_<env>.png``: TOM's discriminator accuracy, weight ESS fraction, recent-weight ratio and the
  effective size of the weighted holdout at every model round (mean over seeds, one faint line per seed);
- ``model_error_<env>.png``: the model's error on each round's new real transitions (``model/new_data_mse``: the
  current policy's, not yet trained on), MBPO_TOM against MBPO, for the runs that logged it;
- ``summary.md`` and ``summary.json``: returns at fixed steps (mean, IQM and their 95% bootstrap CIs over seeds),
  the probability that MBPO_TOM improves on MBPO, the steps each run needed to reach fixed return thresholds, and
  the TOM paper's metric (each run's best evaluation so far) at the paper's step, beside the paper's numbers.

Statistics come from scipy: percentile bootstrap over seeds (``scipy.stats.bootstrap``), IQM as the 25%-trimmed
mean (``scipy.stats.trim_mean``), probability of improvement as the Mann-Whitney U statistic divided by the number of
pairs (``P(X > Y) + P(X = Y) / 2``, as rliable defines it). With 3 to 5 seeds the intervals are wide: read them as such.
"""

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
ALGO_ORDER = ("mbpo_tom", "mbpo", "sac")
LABELS = {"mbpo_tom": "MBPO_TOM", "mbpo": "MBPO", "sac": "SAC"}
CHECKPOINTS = (10_000, 15_000, 20_000, 25_000, 30_000)  # 25k: the TOM paper's Hopper figure
THRESHOLDS = {"HalfCheetah": (1000, 3000), "Hopper": (500, 1000), "Walker2d": (500, 1000)}
# the last: how many holdout transitions TOM's weighted early stopping and elite choice effectively rest on
DIAGNOSTICS = (
    "tom/discriminator_accuracy",
    "tom/weight_ess_fraction",
    "tom/recent_weight_ratio",
    "model/holdout_weight_ess",
)
MODEL_ERROR = "model/new_data_mse"
# The TOM paper's figures (Ma et al. 2023, gym v2, 4 seeds): the cumulative maximum of the evaluations at this step
PAPER = {"Hopper": (25_000, {"mbpo_tom": 900, "mbpo": 840}), "HalfCheetah": (50_000, {"mbpo_tom": 7000, "mbpo": 5810})}
SEED = 0


def load_runs(folder: Path) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """``runs[env][algo]``: the run JSONs, ordered by seed."""
    runs: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(folder.glob("*_seed*.json")):
        if not re.search(r"_seed\d+\.json$", path.name):  # e.g. model_accuracy_<env>_seed<N>_<step>.json
            continue
        run = json.loads(path.read_text())
        runs[run["env"]][run["algo"]].append(run)
    for by_algo in runs.values():
        for algo_runs in by_algo.values():
            algo_runs.sort(key=lambda run: run["seed"])
    return runs


def returns_at(run: dict[str, Any], step: int) -> float | None:
    """The mean evaluation return of ``run`` at ``step`` (None if the run has not reached it)."""
    for evaluation in run["evaluations"]:
        if evaluation["timesteps"] == step:
            return float(evaluation["mean_return"])
    return None


def best_so_far(run: dict[str, Any], step: int) -> float | None:
    """The paper's metric: the best mean evaluation return up to ``step`` (None if the run was not evaluated there)."""
    if returns_at(run, step) is None:
        return None
    return max(float(e["mean_return"]) for e in run["evaluations"] if e["timesteps"] <= step)


def paper_metric(env: str, by_algo: dict[str, list[dict[str, Any]]]) -> dict[str, Any] | None:
    """Our runs in the paper's metric at the paper's step (at the last of ``CHECKPOINTS`` reached, if none got there)."""
    if (paper := PAPER.get(env.split("-")[0])) is None:
        return None
    paper_step, numbers = paper
    furthest = max(last_step(run) for runs in by_algo.values() for run in runs)
    if (step := next((s for s in (paper_step, *reversed(CHECKPOINTS)) if s <= furthest), None)) is None:
        return None
    algos = {}
    for algo in [a for a in ALGO_ORDER if a in by_algo]:
        values = np.array([v for run in by_algo[algo] if (v := best_so_far(run, step)) is not None])
        if len(values):
            algos[algo] = {"values": values.tolist(), "mean": float(values.mean()), "mean_ci": bootstrap_ci(values, np.mean)}
    return {"step": step, "paper_step": paper_step, "paper": numbers, "algos": algos}


def iqm(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return stats.trim_mean(x, 0.25, axis=axis)


def bootstrap_ci(x: np.ndarray, statistic: Any) -> tuple[float, float]:
    """95% percentile-bootstrap interval of ``statistic`` over the seeds ``x`` (the point itself with one seed)."""
    if len(x) < 2 or np.all(x == x[0]):
        value = float(statistic(x))
        return value, value
    result = stats.bootstrap(
        (x,), statistic, n_resamples=2000, confidence_level=0.95, method="percentile", random_state=SEED, vectorized=True
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def probability_of_improvement(x: np.ndarray, y: np.ndarray) -> float:
    """``P(X > Y) + P(X = Y) / 2`` over all pairs of runs."""
    return float(stats.mannwhitneyu(x, y).statistic / (len(x) * len(y)))


def steps_to(run: dict[str, Any], threshold: float) -> int | None:
    for evaluation in run["evaluations"]:
        if evaluation["mean_return"] >= threshold:
            return int(evaluation["timesteps"])
    return None


def last_step(run: dict[str, Any]) -> int:
    return int(run["evaluations"][-1]["timesteps"]) if run["evaluations"] else 0


def plot_curves(env: str, by_algo: dict[str, list[dict[str, Any]]], out: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for index, algo in enumerate(a for a in ALGO_ORDER if a in by_algo):
        runs, color = by_algo[algo], f"C{index}"
        for run in runs:  # every seed as far as it ran, faint
            evaluations = run["evaluations"]
            ax.plot(
                [e["timesteps"] for e in evaluations], [e["mean_return"] for e in evaluations], color=color, lw=0.6, alpha=0.3
            )
        steps = sorted(set.intersection(*(set(e["timesteps"] for e in run["evaluations"]) for run in runs)))
        if not steps:
            continue
        values = np.array([[returns_at(run, s) for s in steps] for run in runs], dtype=float)
        mean = values.mean(0)
        band = np.array([bootstrap_ci(values[:, i], np.mean) for i in range(len(steps))])
        ax.plot(steps, mean, color=color, label=f"{LABELS[algo]} ({len(runs)} seeds; faint: each seed)")
        ax.fill_between(steps, band[:, 0], band[:, 1], color=color, alpha=0.2)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("evaluation return (deterministic, 10 episodes)")
    ax.set_title(f"{env}: mean over seeds up to the last step all reached, 95% bootstrap band", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def tom_rounds(run: dict[str, Any]) -> list[dict[str, Any]]:
    """The model rounds of a run in which TOM's weights were active (none for MBPO and SAC)."""
    return [r for r in run.get("model_rounds", []) if r.get("tom/active") == 1]


def diagnostic_name(key: str) -> str:
    """``"tom/weight_ess_fraction"`` -> ``"weight ess fraction"``."""
    return key.split("/")[1].replace("_", " ")


def plot_diagnostics(env: str, runs: list[dict[str, Any]], out: Path) -> bool:
    rounds = [tom_rounds(run) for run in runs]
    if not any(rounds):
        return False
    fig, axes = plt.subplots(1, len(DIAGNOSTICS), figsize=(16, 3.6))
    for ax, key in zip(axes, DIAGNOSTICS, strict=True):
        series = []
        for run_rounds, run in zip(rounds, runs, strict=True):
            steps = [r["step"] for r in run_rounds if key in r]
            values = [r[key] for r in run_rounds if key in r]
            ax.plot(steps, values, alpha=0.35, lw=0.8, label=f"seed {run['seed']}")
            series.append(dict(zip(steps, values, strict=True)))
        common = sorted(set.intersection(*(set(s) for s in series))) if series else []
        if common:
            ax.plot(common, [np.mean([s[step] for s in series]) for step in common], color="black", lw=1.5, label="mean")
        ax.set_title(diagnostic_name(key))
        ax.set_xlabel("environment steps")
        ax.grid(alpha=0.3)
    axes[0].axhline(0.5, color="grey", ls="--", lw=0.8)
    axes[2].axhline(1.0, color="grey", ls="--", lw=0.8)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"MBPO_TOM on {env}: TOM diagnostics at every TOM round")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return True


def plot_model_error(env: str, by_algo: dict[str, list[dict[str, Any]]], out: Path) -> bool:
    """The model's error on each round's new real transitions (``model/new_data_mse``), per algorithm and seed."""
    fig, ax = plt.subplots(figsize=(7, 4))
    plotted = False
    for color, algo in zip(("C0", "C1"), ("mbpo_tom", "mbpo"), strict=True):
        series = []
        for run in by_algo.get(algo, []):
            rounds = [r for r in run.get("model_rounds", []) if MODEL_ERROR in r]
            if rounds:
                steps, values = [r["step"] for r in rounds], [r[MODEL_ERROR] for r in rounds]
                ax.plot(steps, values, color=color, alpha=0.3, lw=0.8)
                series.append(dict(zip(steps, values, strict=True)))
        if series:
            common = sorted(set.intersection(*(set(s) for s in series)))
            mean = [np.mean([s[step] for s in series]) for step in common]
            ax.plot(common, mean, color=color, lw=1.5, label=f"{LABELS[algo]} ({len(series)} seeds; faint: each seed)")
            plotted = True
    if plotted:
        ax.set_yscale("log")
        ax.set_xlabel("environment steps")
        ax.set_ylabel("MSE of the elites before the round")
        ax.set_title(f"{env}: model error on the real transitions collected since the last round", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out, dpi=110)
    plt.close(fig)
    return plotted


def mean_model_error(run: dict[str, Any]) -> float | None:
    """The mean of ``model/new_data_mse`` over the run's rounds (None if it logged none)."""
    values = [r[MODEL_ERROR] for r in run.get("model_rounds", []) if MODEL_ERROR in r]
    return float(np.mean(values)) if values else None


def summarise(runs: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for env, by_algo in sorted(runs.items()):
        env_summary: dict[str, Any] = {"returns": {}, "probability_of_improvement": {}, "steps_to_threshold": {}}
        for step in CHECKPOINTS:
            for algo in [a for a in ALGO_ORDER if a in by_algo]:
                values = np.array([v for run in by_algo[algo] if (v := returns_at(run, step)) is not None])
                if len(values) == 0:
                    continue
                env_summary["returns"].setdefault(str(step), {})[algo] = {
                    "seeds": len(values),
                    "values": values.tolist(),
                    "mean": float(values.mean()),
                    "mean_ci": bootstrap_ci(values, np.mean),
                    "iqm": float(iqm(values)),
                    "iqm_ci": bootstrap_ci(values, iqm),
                }
            at_step = env_summary["returns"].get(str(step), {})
            if "mbpo_tom" in at_step and "mbpo" in at_step:
                x, y = np.array(at_step["mbpo_tom"]["values"]), np.array(at_step["mbpo"]["values"])
                env_summary["probability_of_improvement"][str(step)] = probability_of_improvement(x, y)
        base = env.split("-")[0]
        for threshold in THRESHOLDS.get(base, ()):
            env_summary["steps_to_threshold"][str(threshold)] = {
                algo: [
                    {"seed": run["seed"], "steps": steps_to(run, threshold), "ran_to": last_step(run)} for run in by_algo[algo]
                ]
                for algo in ALGO_ORDER
                if algo in by_algo
            }
        env_summary["paper_metric"] = paper_metric(env, by_algo)
        env_summary["model_error_on_new_data"] = {
            algo: [
                {"seed": run["seed"], "mean_mse": error}
                for run in by_algo[algo]
                if (error := mean_model_error(run)) is not None
            ]
            for algo in ("mbpo_tom", "mbpo")
            if algo in by_algo
        }
        active = [r for run in by_algo.get("mbpo_tom", []) for r in tom_rounds(run)]
        env_summary["tom_diagnostics"] = {
            key: {"median": float(np.median(values)), "min": float(np.min(values)), "max": float(np.max(values))}
            for key in DIAGNOSTICS
            if (values := [r[key] for r in active if key in r])
        }
        env_summary["runs"] = {
            algo: [
                {"seed": run["seed"], "steps": last_step(run),
                 "wall_time_s": run["wall_time_s"], "resumed_at": run.get("resumed_at", [])}
                for run in by_algo[algo]
            ]
            for algo in ALGO_ORDER
            if algo in by_algo
        }  # fmt: skip
        summary[env] = env_summary
    return summary


def _short(value: float) -> str:
    """Three significant digits, without an exponent for counts."""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def markdown(summary: dict[str, Any]) -> str:
    lines = []
    for env, env_summary in summary.items():
        lines += [
            f"### {env}",
            "",
            "| steps | algorithm | seeds | mean [95% CI] | IQM [95% CI] |",
            "| --- | --- | --- | --- | --- |",
        ]
        for step, by_algo in env_summary["returns"].items():
            for algo, row in by_algo.items():
                lo, hi = row["mean_ci"]
                ilo, ihi = row["iqm_ci"]
                lines.append(
                    f"| {int(step):,} | {LABELS[algo]} | {row['seeds']} | {row['mean']:.0f} [{lo:.0f}, {hi:.0f}] | "
                    f"{row['iqm']:.0f} [{ilo:.0f}, {ihi:.0f}] |"
                )
        if env_summary["probability_of_improvement"]:
            pairs = ", ".join(f"{int(s):,} steps: {p:.2f}" for s, p in env_summary["probability_of_improvement"].items())
            lines += ["", f"P(MBPO_TOM > MBPO): {pairs}."]
        for threshold, by_algo in env_summary["steps_to_threshold"].items():
            parts = []
            for algo, runs_of_algo in by_algo.items():
                shown = ", ".join(
                    f"{r['steps']:,}" if r["steps"] is not None else f"not reached by {r['ran_to']:,}" for r in runs_of_algo
                )
                parts.append(f"{LABELS[algo]} {shown}")
            lines += ["", f"Steps to a return of {threshold} (per seed): " + "; ".join(parts) + "."]
        if paper := env_summary.get("paper_metric"):
            parts = []
            for algo, row in paper["algos"].items():
                lo, hi = row["mean_ci"]
                quoted = f" (paper: about {paper['paper'][algo]:,})" if algo in paper["paper"] else ""
                seeds = f"{len(row['values'])} seed{'s' if len(row['values']) > 1 else ''}"
                parts.append(f"{LABELS[algo]} {row['mean']:,.0f} [{lo:,.0f}, {hi:,.0f}], {seeds}{quoted}")
            where = f"{paper['step']:,} steps"
            if paper["step"] != paper["paper_step"]:
                where += f" (the paper's figure is at {paper['paper_step']:,}, beyond these runs)"
            lines += [
                "",
                f"In the TOM paper's metric (each run's best evaluation so far, mean over seeds [95% CI]) at {where}: "
                + "; ".join(parts)
                + ".",
            ]
        errors = {algo: rows for algo, rows in env_summary["model_error_on_new_data"].items() if rows}
        if errors:
            parts = [
                f"{LABELS[algo]} " + ", ".join(f"{row['mean_mse']:.3g} (seed {row['seed']})" for row in rows)
                for algo, rows in errors.items()
            ]
            lines += [
                "",
                "Model error on each round's new real transitions (`model/new_data_mse`, mean over the rounds of a run; "
                "only runs that logged it): " + "; ".join(parts) + ".",
            ]
        if env_summary["tom_diagnostics"]:
            parts = [
                f"{diagnostic_name(key)} {_short(d['median'])} [{_short(d['min'])}, {_short(d['max'])}]"
                for key, d in env_summary["tom_diagnostics"].items()
            ]
            lines += ["", "TOM's diagnostics over its rounds, all seeds (median [min, max]): " + "; ".join(parts) + "."]
        runs = []
        for algo, algo_runs in env_summary["runs"].items():
            for run in algo_runs:
                resumed = f", resumed at {', '.join(map(str, run['resumed_at']))}" if run["resumed_at"] else ""
                runs.append(
                    f"{LABELS[algo]} seed {run['seed']}: {run['steps']:,} steps, {run['wall_time_s'] / 60:.0f} min{resumed}"
                )
        lines += ["", "Runs: " + "; ".join(runs) + "."]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results-dir", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--readme", default=None, help="replace the study block of this README with the new results")
    args = parser.parse_args()
    folder = Path(args.results_dir)
    runs = load_runs(folder)
    if not runs:
        raise SystemExit(f"No run results in {folder}: run benchmarks/sample_efficiency.py first.")
    for env, by_algo in runs.items():
        plot_curves(env, by_algo, folder / f"curves_{env}.png")
        if "mbpo_tom" in by_algo:
            plot_diagnostics(env, by_algo["mbpo_tom"], folder / f"tom_diagnostics_{env}.png")
        plot_model_error(env, by_algo, folder / f"model_error_{env}.png")
    summary = summarise(runs)
    (folder / "summary.json").write_text(json.dumps(summary, indent=1))
    text = markdown(summary)
    (folder / "summary.md").write_text(text)
    print(text)
    if args.readme:
        update_readme(Path(args.readme), folder, sorted(runs), text)


README_START, README_END = "<!-- study-results:start -->", "<!-- study-results:end -->"


def update_readme(readme: Path, folder: Path, envs: list[str], text: str) -> None:
    """Put the plots and the summary between the README's study markers (written by this script, not by hand)."""
    content = readme.read_text()
    if README_START not in content or README_END not in content:
        raise SystemExit(f"{readme} has no {README_START} ... {README_END} block to replace.")
    relative = folder.resolve().relative_to(readme.resolve().parent)
    figures = []
    for env in envs:
        figures.append(f"![{env} learning curves]({relative}/curves_{env}.png)")
        if (folder / f"tom_diagnostics_{env}.png").exists():
            figures.append(f"![{env} TOM diagnostics]({relative}/tom_diagnostics_{env}.png)")
        if (folder / f"model_error_{env}.png").exists():
            figures.append(f"![{env} model error on new transitions]({relative}/model_error_{env}.png)")
    generated = "\n".join(
        [
            README_START,
            "<!-- generated by `python benchmarks/report.py --readme README.md` -->",
            "",
            *figures,
            "",
            text,
            README_END,
        ]
    )
    before, rest = content.split(README_START, 1)
    after = rest.split(README_END, 1)[1]
    readme.write_text(before + generated + after)


if __name__ == "__main__":
    main()
