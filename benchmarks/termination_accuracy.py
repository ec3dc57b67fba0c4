"""
How the learned termination classifier errs on real MuJoCo transitions, against the environment's own check.

Usage: ``python benchmarks/termination_accuracy.py`` (Hopper-v4 and Walker2d-v4, 20,000 random transitions to fit
and 20,000 others to score, one fit of 200 and of 3,000 gradient steps per seed; about a minute per env on one
thread). For each fit it prints the terminal rate of the scored transitions, the rate the classifier predicts, its
false and missed terminals, and the same for the network with the prior's log-odds added to its logit (the
Bayes threshold for the data's class balance, which the classifier does not use).
"""

from __future__ import annotations

import argparse
import json
import math

import gymnasium as gym
import numpy as np
import torch as th

from sb3_tom.dynamics.termination import LearnedTermination


def random_transitions(env_id: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` next observations of a uniformly random policy and their ``terminated`` flags."""
    env = gym.make(env_id)
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    next_obs, terminated = [], []
    while len(next_obs) < n:
        obs, _, term, trunc, _ = env.step(rng.uniform(-1, 1, env.action_space.shape))
        next_obs.append(obs)
        terminated.append(term)
        if term or trunc:
            env.reset()
    return np.asarray(next_obs, dtype=np.float32), np.asarray(terminated)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=["Hopper-v4", "Walker2d-v4"])
    parser.add_argument("--transitions", type=int, default=20_000, help="random transitions to fit and to score")
    parser.add_argument("--steps", type=int, nargs="+", default=[200, 3000], help="gradient steps of each fit")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    rows = []
    for env_id in args.envs:
        fit_x, fit_y = random_transitions(env_id, args.transitions, seed=0)
        test_x, test_y = random_transitions(env_id, args.transitions, seed=1)
        truth = th.as_tensor(test_y)
        prior_log_odds = math.log(fit_y.mean() / (1 - fit_y.mean()))
        for seed in args.seeds:
            for steps in args.steps:
                th.manual_seed(seed)
                classifier = LearnedTermination(fit_x.shape[1], 1)
                classifier.fit(fit_x, np.zeros((len(fit_x), 1)), fit_x, fit_y, n_steps=steps)
                with th.no_grad():
                    logits = classifier.logits(th.as_tensor(test_x))
                for threshold, predicted in (("balanced", logits > 0), ("prior log-odds", logits + prior_log_odds > 0)):
                    row = {
                        "env": env_id,
                        "seed": seed,
                        "steps": steps,
                        "threshold": threshold,
                        "terminal_rate": float(truth.float().mean()),
                        "predicted_rate": float(predicted.float().mean()),
                        "false_terminals": int((predicted & ~truth).sum()),
                        "missed_terminals": int((~predicted & truth).sum()),
                        "terminals": int(truth.sum()),
                    }
                    rows.append(row)
                    print(
                        f"{env_id} seed {seed} {steps:5d} steps, {threshold:14s}: terminal {row['terminal_rate']:.3f},"
                        f" predicted {row['predicted_rate']:.3f}, false {row['false_terminals']},"
                        f" missed {row['missed_terminals']} of {row['terminals']}"
                    )
    if args.json:
        with open(args.json, "w") as file:
            json.dump(rows, file, indent=1)


if __name__ == "__main__":
    main()
