"""
TOM's diagnostics over a short run: every model round's ``tom/`` and ``model/`` logger values, printed and saved.

    python benchmarks/tom_diagnostics.py --env HalfCheetah-v4 --steps 8000 --threads 1 --json tom_diagnostics.json

The agent is MBPO_TOM with the per-environment hyperparameters shipped with sb3-tom (the ones RL Zoo uses);
``--learning-starts`` and ``--policy-buffer-size`` shorten the run (TOM starts once the policy collected
``policy_buffer_size`` transitions after the ``learning_starts`` random ones). A working discriminator shows an
accuracy clearly above 0.5, a weight ESS fraction below 1 and a recent-weight ratio above 1.
"""

import argparse
import json
import time
from typing import Any

import gymnasium as gym
import torch as th

from sb3_tom import MBPO, MBPO_TOM, zoo
from sb3_tom.buffers import Transitions

KEYS = (
    "tom/active",
    "tom/discriminator_loss",
    "tom/discriminator_accuracy",
    "tom/weight_ess_fraction",
    "tom/recent_weight_ratio",
    "tom/weight_max",
    "tom/weight_clipped_fraction",
    "model/epochs",
    "model/holdout_mse",
)


def record_rounds(model: MBPO, verbose: bool = False) -> list[dict[str, float]]:
    """
    A list that receives, after every model round of ``model``, its step, the seconds since this call and the
    :data:`KEYS` it logged.
    """
    rounds: list[dict[str, float]] = []
    learn_model = model._learn_model
    start = time.perf_counter()

    def recording_learn_model(data: Transitions) -> th.Tensor | None:
        result = learn_model(data)
        values = {key: float(model.logger.name_to_value[key]) for key in KEYS if key in model.logger.name_to_value}
        rounds.append({"step": model.num_timesteps, "seconds": time.perf_counter() - start, **values})
        if verbose:
            print(" ".join(f"{key.split('/')[-1]}={value:.4g}" for key, value in rounds[-1].items()), flush=True)
        return result

    model._learn_model = recording_learn_model  # type: ignore[method-assign]
    return rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="HalfCheetah-v4")
    parser.add_argument("--steps", type=int, default=8000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--learning-starts", type=int, default=None, help="default: the shipped value")
    parser.add_argument("--policy-buffer-size", type=int, default=None, help="default: the shipped value")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=None, help="write the rounds to this file")
    args = parser.parse_args()
    if args.threads is not None:
        th.set_num_threads(args.threads)

    params: dict[str, Any] = zoo.hyperparameters("mbpo_tom", args.env)
    for key in ("learning_starts", "policy_buffer_size"):
        value = getattr(args, key)
        if value is not None:
            params[key] = value
    env = gym.make(args.env, **zoo.env_kwargs("mbpo_tom", args.env))
    model = MBPO_TOM("MlpPolicy", env, seed=args.seed, **params)
    print(f"MBPO_TOM on {args.env}, seed {args.seed}: {params}")

    rounds = record_rounds(model, verbose=True)
    model.learn(args.steps)
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"env": args.env, "seed": args.seed, "hyperparameters": params, "rounds": rounds}, file, indent=1)


if __name__ == "__main__":
    main()
