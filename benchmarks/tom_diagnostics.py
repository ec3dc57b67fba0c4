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

import torch as th
from stable_baselines3.common.callbacks import BaseCallback

from sb3_tom import MBPO, MBPO_TOM, zoo

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
    "model/new_data_mse",
    "model/new_data_nll",
    "model/holdout_weight_ess",
)


class ModelRoundRecorder(BaseCallback):
    """
    Records, after every model round, its step, the seconds since training started and the :data:`KEYS` it logged.

    A round runs in ``train()`` right after the env step that made it due; the next env step's callback still sees
    what the round logged (SB3 dumps its logger during the rollout, after the callback). A callback, not a wrapper
    patched onto the agent: ``save`` would pickle such a wrapper, and a loaded agent would run the saved copy's
    model learning instead of its own.

    :param verbose: Print every round.
    """

    def __init__(self, verbose: int = 0) -> None:
        super().__init__(verbose)
        self.rounds: list[dict[str, float]] = []
        self._start = time.perf_counter()

    def _on_training_start(self) -> None:
        self._start = time.perf_counter()

    def _on_step(self) -> bool:
        assert isinstance(self.model, MBPO)
        if self.model._last_model_train_step == self.num_timesteps - 1:
            logged = self.model.logger.name_to_value
            values = {key: float(logged[key]) for key in KEYS if key in logged}
            self.rounds.append({"step": self.num_timesteps - 1, "seconds": time.perf_counter() - self._start, **values})
            if self.verbose:
                print(" ".join(f"{key.split('/')[-1]}={value:.4g}" for key, value in self.rounds[-1].items()), flush=True)
        return True


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
    env = zoo.make_env("mbpo_tom", args.env)
    model = MBPO_TOM("MlpPolicy", env, seed=args.seed, **params)
    print(f"MBPO_TOM on {args.env}, seed {args.seed}: {params}")

    recorder = ModelRoundRecorder(verbose=1)
    model.learn(args.steps, callback=recorder)
    if args.json:
        with open(args.json, "w") as file:
            json.dump(
                {"env": args.env, "seed": args.seed, "hyperparameters": params, "rounds": recorder.rounds}, file, indent=1
            )


if __name__ == "__main__":
    main()
