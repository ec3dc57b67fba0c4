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

In the study's runs the model is warm-started from round to round and TOM's weights shape every round; this script
isolates one round, from a fresh initialisation, on one buffer. It reads the checkpoint and writes only ``--json``.
"""

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.logger import configure

from sb3_tom import MBPO, MBPO_TOM, zoo
from sb3_tom.buffers import Transitions

VARIANTS = ("mle", "tom")


def load(checkpoint: Path, env_id: str) -> MBPO_TOM:
    """The checkpoint's agent with its replay buffer, on the CPU, logging to memory only."""
    agent = MBPO_TOM.load(checkpoint / "agent.zip", env=zoo.make_env("mbpo_tom", env_id), device="cpu")
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


def fit_once(
    checkpoint: Path, env_id: str, variant: str, seed: int, fresh: Transitions, sample: th.Tensor, epochs: int | None
) -> dict[str, Any]:
    """
    One model round of ``variant`` on a reloaded checkpoint, from a fresh ensemble initialised from ``seed``; with
    ``epochs``, exactly that many epochs (the snapshot of the best holdout epoch is still restored).
    """
    agent = load(checkpoint, env_id)
    if epochs is not None:
        agent.model_max_epochs, agent.model_patience = epochs, epochs
    th.manual_seed(seed)
    agent._new_dynamics()
    data = agent._real_data()
    start = time.perf_counter()
    if variant == "tom":
        if not agent.tom_active:
            raise SystemExit(f"{checkpoint}: TOM is not active yet at step {agent.num_timesteps} (too early a checkpoint).")
        agent._learn_model(data)
    else:
        MBPO._learn_model(agent, data)
    logged = {
        k: float(v) for k, v in agent.logger.name_to_value.items() if k.startswith(("tom/", "model/")) and k != "model/elites"
    }
    buffer_sample = data.index(sample)
    recent = data.index(th.arange(len(data) - agent.policy_buffer_size, len(data)))
    return {
        "variant": variant,
        "seed": seed,
        "seconds": time.perf_counter() - start,
        "fresh": score(agent, fresh),
        "recent": score(agent, recent),
        "buffer": score(agent, buffer_sample),
        "logged": logged,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a study checkpoint folder (agent.zip, replay_buffer.pkl, state.json)")
    parser.add_argument("--fits", type=int, default=3, help="fits per variant (seeds 0, 1, ...)")
    parser.add_argument("--fresh", type=int, default=2000, help="new transitions of the current policy to score on")
    parser.add_argument("--buffer-sample", type=int, default=2000, help="replay-buffer transitions to score on")
    parser.add_argument(
        "--epochs", type=int, default=None, help="train every fit for exactly this many epochs (default: early stopping)"
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.threads is not None:
        th.set_num_threads(args.threads)
    checkpoint = Path(args.checkpoint)
    state = json.loads((checkpoint / "state.json").read_text())
    if state["algo"] != "mbpo_tom":
        sys.exit(f"{checkpoint} is a checkpoint of {state['algo']}: this needs an MBPO_TOM checkpoint (its dual network).")
    env_id = state["env"]
    agent = load(checkpoint, env_id)
    fresh = collect(agent, env_id, args.fresh, seed=state["seed"] + 20_000)
    n = len(agent._real_data())
    sample = th.randperm(n, generator=th.Generator().manual_seed(0))[: args.buffer_sample]
    print(f"{checkpoint}: {env_id} seed {state['seed']} at step {agent.num_timesteps}, {n} real transitions", flush=True)

    fits = []
    for seed in range(args.fits):
        for variant in VARIANTS:
            fit = fit_once(checkpoint, env_id, variant, seed, fresh, sample, args.epochs)
            fits.append(fit)
            print(
                f"fit {seed} {variant}: fresh mse {fit['fresh']['mse']:.4g} nll {fit['fresh']['nll']:.4g}, "
                f"recent mse {fit['recent']['mse']:.4g}, buffer mse {fit['buffer']['mse']:.4g} "
                f"({fit['logged'].get('model/epochs', 0):.0f} epochs, "
                f"{fit['seconds']:.0f} s)",
                flush=True,
            )
    summary = {}
    for where in ("fresh", "recent", "buffer"):
        for metric in ("mse", "nll"):
            by_variant = {v: [f[where][metric] for f in fits if f["variant"] == v] for v in VARIANTS}
            summary[f"{where}_{metric}"] = {v: float(np.mean(values)) for v, values in by_variant.items()}
            if metric == "mse":  # paired by seed: the same initialisation
                ratios = [t / m for t, m in zip(by_variant["tom"], by_variant["mle"], strict=True)]
                summary[f"{where}_mse"]["tom_over_mle_per_seed"] = ratios  # type: ignore[assignment]
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
            "fits": fits,
            "summary": summary,
        }
        Path(args.json).write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
