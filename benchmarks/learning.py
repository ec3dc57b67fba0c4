"""
Sample efficiency check: env steps until the deterministic evaluation return reaches a threshold, per seed.

    python benchmarks/learning.py                      # MBPO and MBPO_TOM, InvertedPendulum-v4, seeds 0 1 2
    python benchmarks/learning.py --algos mbpo_tom --seeds 0 --env Hopper-v4 --steps 50000 --threshold 2000

Each run uses the shipped RL Zoo hyperparameters for the env (``sb3_tom.zoo.hyperparameters``) with smaller model
rounds by default (``--rollout-batch-size 5000 --model-max-epochs 20``, as in ``tests/test_learning.py``; pass 0 to
keep the shipped values), evaluates 5 deterministic episodes every ``--eval-freq`` steps and stops at the threshold.
Prints a markdown table: the env step at which the threshold was reached (or "not reached") and the best return.
"""

import argparse
import time

import gymnasium as gym
import torch as th
from stable_baselines3.common.callbacks import EvalCallback, StopTrainingOnRewardThreshold
from stable_baselines3.common.monitor import Monitor

try:
    import sb3_tom
except ImportError:  # run from a source checkout without installing
    import os
    import sys

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import sb3_tom

from sb3_tom.zoo import ALGO_CLASS_NAMES, hyperparameters


def run(algo: str, env_id: str, seed: int, args: argparse.Namespace) -> tuple[int | None, float, float]:
    """Train one agent; return (step at which the threshold was reached or None, best return, seconds)."""
    params = hyperparameters(algo, env_id)
    if args.rollout_batch_size:
        params["rollout_batch_size"] = args.rollout_batch_size
    if args.model_max_epochs:
        params["model_max_epochs"] = args.model_max_epochs
    model = getattr(sb3_tom, ALGO_CLASS_NAMES[algo])("MlpPolicy", env_id, seed=seed, **params)
    evaluation = EvalCallback(
        Monitor(gym.make(env_id)),
        eval_freq=args.eval_freq,
        n_eval_episodes=5,
        deterministic=True,
        callback_on_new_best=StopTrainingOnRewardThreshold(reward_threshold=args.threshold, verbose=0),
        verbose=0,
    )
    start = time.perf_counter()
    model.learn(args.steps, callback=evaluation)
    reached = model.num_timesteps if evaluation.best_mean_reward >= args.threshold else None
    return reached, float(evaluation.best_mean_reward), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algos", nargs="+", default=["mbpo", "mbpo_tom"], choices=sorted(ALGO_CLASS_NAMES))
    parser.add_argument("--env", default="InvertedPendulum-v4")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=5000, help="env step budget of each run")
    parser.add_argument("--threshold", type=float, default=900.0, help="deterministic evaluation return to reach")
    parser.add_argument("--eval-freq", type=int, default=250)
    parser.add_argument("--rollout-batch-size", type=int, default=5000, help="0: the shipped value")
    parser.add_argument("--model-max-epochs", type=int, default=20, help="0: the shipped value (early stopping only)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    th.set_num_threads(args.threads)

    print(f"{args.env}: env steps until the deterministic return reaches {args.threshold:g} (budget {args.steps})\n")
    print("| algorithm | seed | reached at step | best return | seconds |")
    print("| --- | --- | --- | --- | --- |")
    for algo in args.algos:
        for seed in args.seeds:
            reached, best, seconds = run(algo, args.env, seed, args)
            at = f"{reached:,}" if reached is not None else "not reached"
            print(f"| {ALGO_CLASS_NAMES[algo]} | {seed} | {at} | {best:.1f} | {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
