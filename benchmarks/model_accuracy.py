"""
Does TOM's weighting make the model more accurate where the current policy goes? A controlled test on one checkpoint.

    python benchmarks/model_accuracy.py benchmarks/checkpoints/mbpo_tom_HalfCheetah-v4_seed1/step_10000 \
        --fits 3 --fresh 2000 --threads 1 --json benchmarks/results/model_accuracy_HalfCheetah-v4_seed1_10000.json

From an MBPO_TOM checkpoint of ``benchmarks/sample_efficiency.py`` (agent and replay buffer), ``--fresh`` new real
transitions are collected with the checkpoint's current (stochastic) policy on a new env: the transitions the policy
would collect next, which no model has seen. Then, ``--fits`` times, a freshly initialised ensemble is fit on the
checkpoint's replay buffer in two ways, the same initialisation for both: by plain maximum likelihood (MBPO's model
round) and by TOM's model round (a new discriminator, the checkpoint's dual trained on, weighted maximum likelihood),
each from a reloaded checkpoint. Both are scored with the elites' MSE and NLL (as MBPO's holdout) on the fresh
transitions, on the ``policy_buffer_size`` newest transitions of the buffer (TOM's current-policy pool, which its
weights favour; training data, but for a holdout share) and on a uniform sample of the replay buffer (mostly training
data: what the weighting gives up).

``--variants`` adds TOM's round with the official code's resampling scheme (``tom_resample``). For every TOM fit the
script also records the round's weights: their mean and median on the fresh transitions and on the current-policy
pool (does TOM favour where the policy goes next?) and on the buffer sample, whose agreement across fits (Spearman
and Pearson correlation; each fit trains its own discriminator and the checkpoint's dual) says how reproducible one
round's weights are.

On an MBPO checkpoint only ``--variants mle`` runs (TOM's rounds need MBPO_TOM's dual network): with ``--warm`` it
compares the run's next round with the fits from scratch of another invocation.

In the study's runs the model is warm-started from round to round and TOM's weights shape every round; by default
this script isolates one round, from a fresh initialisation, on one buffer. ``--warm`` starts every fit from the
checkpoint's trained ensemble and optimiser instead: the round the run would do next. The script reads the checkpoint
and writes only ``--json``.
"""

import argparse
import inspect
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from scipy import stats
from stable_baselines3.common.logger import configure

from sb3_tom import MBPO, MBPO_TOM, zoo
from sb3_tom.buffers import Transitions

#: ``mle``: MBPO's round; ``tom``: TOM's round as configured (weighted NLL by default); ``tom_resample``: TOM's round with
#: the official code's resampling scheme (``weight_mode="resample"``)
VARIANTS = ("mle", "tom", "tom_resample")


#: the checkpoints this script reads: TOM's variants need MBPO_TOM's (its dual network), plain MLE any of these
ALGOS: dict[str, type[MBPO]] = {"mbpo": MBPO, "mbpo_tom": MBPO_TOM}


def load(checkpoint: Path, env_id: str) -> Any:
    """The checkpoint's agent (MBPO or MBPO_TOM) with its replay buffer, on the CPU, logging to memory only."""
    algo = json.loads((checkpoint / "state.json").read_text())["algo"]
    agent = ALGOS[algo].load(checkpoint / "agent.zip", env=zoo.make_env(algo, env_id), device="cpu")
    agent.load_replay_buffer(checkpoint / "replay_buffer.pkl")
    agent.set_logger(configure(None, []))
    return agent


def collect(agent: MBPO_TOM, env_id: str, n: int, seed: int) -> Transitions:
    """``n`` real transitions of the agent's stochastic policy on a new env (actions in the policy's [-1, 1] scale)."""
    env = zoo.make_env("mbpo_tom", env_id)
    obs, _ = env.reset(seed=seed)
    columns: list[list[np.ndarray]] = [[], [], [], [], []]
    for _ in range(n):
        action, _ = agent.predict(obs, deterministic=False)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        scaled = agent.policy.scale_action(np.asarray(action))
        for column, value in zip(columns, (obs, scaled, reward, next_obs, terminated), strict=True):
            column.append(np.asarray(value, dtype=np.float32).reshape(-1))
        obs = env.reset()[0] if terminated or truncated else next_obs
    obs_t, act_t, rew_t, next_t, term_t = (th.as_tensor(np.stack(column)) for column in columns)
    return Transitions(obs_t, act_t, rew_t.reshape(-1), next_t, term_t.reshape(-1))


def score(agent: MBPO_TOM, data: Transitions) -> dict[str, float]:
    mse, nll = agent.dynamics_trainer.elite_error(data.observations, data.actions, data.rewards, data.next_observations)
    return {"mse": mse, "nll": nll}


def weights_of(agent: MBPO_TOM, data: Transitions) -> np.ndarray:
    """TOM's (unclipped, buffer-normalised) weights of ``data`` under the agent's current discriminator and dual."""
    columns = (data.observations, data.actions, data.next_observations, data.terminated)
    return agent.transition_weights(*(c.cpu().numpy() for c in columns))


def fit_once(
    checkpoint: Path,
    env_id: str,
    variant: str,
    seed: int,
    fresh: Transitions,
    sample: th.Tensor,
    epochs: int | None,
    warm: bool = False,
) -> dict[str, Any]:
    """
    One model round of ``variant`` on a reloaded checkpoint, from a fresh ensemble initialised from ``seed``; with
    ``epochs``, exactly that many epochs (the snapshot of the best holdout epoch is still restored). With ``warm``, the
    round starts from the checkpoint's own ensemble and optimiser instead (as the next round of the run would).
    """
    agent = load(checkpoint, env_id)
    if epochs is not None:
        agent.model_max_epochs, agent.model_patience = epochs, epochs
    th.manual_seed(seed)
    if not warm:
        agent._new_dynamics()
    data = agent._real_data()
    start = time.perf_counter()
    if variant.startswith("tom"):
        if variant == "tom_resample":
            agent.weight_mode = "resample"
        if not agent.tom_active:
            raise SystemExit(f"{checkpoint}: TOM is not active yet at step {agent.num_timesteps} (too early a checkpoint).")
        agent._learn_model(data)
    else:
        MBPO._learn_model(agent, data)
    logged = {
        k: float(v) for k, v in agent.logger.name_to_value.items() if k.startswith(("tom/", "model/")) and k != "model/elites"
    }
    buffer_sample = data.index(sample)
    # TOM's current-policy pool (on an MBPO checkpoint: as large as MBPO_TOM's default pool)
    pool = getattr(agent, "policy_buffer_size", inspect.signature(MBPO_TOM).parameters["policy_buffer_size"].default)
    recent = data.index(th.arange(max(0, len(data) - pool), len(data)))
    seconds = time.perf_counter() - start
    record = {
        "variant": variant,
        "seed": seed,
        "seconds": seconds,
        "fresh": score(agent, fresh),
        "recent": score(agent, recent),
        "buffer": score(agent, buffer_sample),
        "logged": logged,
    }
    if variant.startswith("tom"):
        # the round's weights: where they put the new transitions, and (compared across fits) how reproducible they are
        for where, rows in (("fresh", fresh), ("recent", recent)):
            w = weights_of(agent, rows)
            record[where].update(mean_weight=float(w.mean()), median_weight=float(np.median(w)))
            record[where]["above_clip_fraction"] = float((w > (agent.weight_clip or np.inf)).mean())
        record["buffer_sample_weights"] = [float(f"{w:.4g}") for w in weights_of(agent, buffer_sample)]
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a study checkpoint folder (agent.zip, replay_buffer.pkl, state.json)")
    parser.add_argument("--fits", type=int, default=3, help="fits per variant (seeds 0, 1, ...)")
    parser.add_argument("--fresh", type=int, default=2000, help="new transitions of the current policy to score on")
    parser.add_argument("--buffer-sample", type=int, default=2000, help="replay-buffer transitions to score on")
    parser.add_argument(
        "--epochs", type=int, default=None, help="train every fit for exactly this many epochs (default: early stopping)"
    )
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=["mle", "tom"], help="model rounds to compare")
    parser.add_argument(
        "--warm", action="store_true", help="start every fit from the checkpoint's ensemble (the run's next round)"
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.threads is not None:
        th.set_num_threads(args.threads)
    checkpoint = Path(args.checkpoint)
    state = json.loads((checkpoint / "state.json").read_text())
    if state["algo"] not in ALGOS:
        sys.exit(f"{checkpoint} is a checkpoint of {state['algo']}: this needs an MBPO or MBPO_TOM checkpoint.")
    if state["algo"] != "mbpo_tom" and args.variants != ["mle"]:
        sys.exit(f"{checkpoint} is a checkpoint of {state['algo']}: TOM's variants need an MBPO_TOM checkpoint (its dual).")
    env_id = state["env"]
    agent = load(checkpoint, env_id)
    fresh = collect(agent, env_id, args.fresh, seed=state["seed"] + 20_000)
    n = len(agent._real_data())
    sample = th.randperm(n, generator=th.Generator().manual_seed(0))[: args.buffer_sample]
    print(f"{checkpoint}: {env_id} seed {state['seed']} at step {agent.num_timesteps}, {n} real transitions", flush=True)

    fits = []
    for seed in range(args.fits):
        for variant in args.variants:
            fit = fit_once(checkpoint, env_id, variant, seed, fresh, sample, args.epochs, args.warm)
            fits.append(fit)
            line = (
                f"fit {seed} {variant}: fresh mse {fit['fresh']['mse']:.4g} nll {fit['fresh']['nll']:.4g}, "
                f"recent mse {fit['recent']['mse']:.4g}, buffer mse {fit['buffer']['mse']:.4g} "
                f"({fit['logged'].get('model/epochs', 0):.0f} epochs, {fit['seconds']:.0f} s)"
            )
            if "mean_weight" in fit["fresh"]:
                fresh_w, recent_w = fit["fresh"], fit["recent"]
                line += f", weight mean/median: fresh {fresh_w['mean_weight']:.3g}/{fresh_w['median_weight']:.3g}"
                line += f", recent {recent_w['mean_weight']:.3g}/{recent_w['median_weight']:.3g}"
            print(line, flush=True)
    summary = {}
    for where in ("fresh", "recent", "buffer"):
        for metric in ("mse", "nll"):
            by_variant = {v: [f[where][metric] for f in fits if f["variant"] == v] for v in args.variants}
            summary[f"{where}_{metric}"] = {v: float(np.mean(values)) for v, values in by_variant.items()}
            if metric == "mse" and "mle" in by_variant:  # paired by seed: the same initialisation
                for v in args.variants:
                    if v != "mle":
                        ratios = [t / m for t, m in zip(by_variant[v], by_variant["mle"], strict=True)]
                        summary[f"{where}_mse"][f"{v}_over_mle_per_seed"] = ratios  # type: ignore[assignment]
    for variant in args.variants:
        weights = [np.array(f["buffer_sample_weights"]) for f in fits if f["variant"] == variant and f["variant"] != "mle"]
        if len(weights) >= 2:  # independent discriminator and dual trainings (same start) on the same rows
            pairs = [(a, b) for i, a in enumerate(weights) for b in weights[i + 1 :]]
            summary[f"{variant}_weight_agreement"] = {
                "spearman": [float(stats.spearmanr(a, b).statistic) for a, b in pairs],
                "pearson": [float(np.corrcoef(a, b)[0, 1]) for a, b in pairs],
            }
    print(json.dumps(summary, indent=1))
    if args.json:
        record = {
            "checkpoint": checkpoint.name,  # the folder name only: the JSON is committed, the checkpoint is not
            "env": env_id,
            "run_seed": state["seed"],
            "step": agent.num_timesteps,
            "real_transitions": n,
            "fresh_transitions": args.fresh,
            "epochs": args.epochs,
            "warm": args.warm,
            "variants": args.variants,
            "fits": fits,
            "summary": summary,
        }
        Path(args.json).write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
