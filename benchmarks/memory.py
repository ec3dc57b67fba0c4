"""
Peak memory of MBPO_TOM with a full 1M-transition real buffer (HalfCheetah-v4, default settings).

    python benchmarks/memory.py [--size 1000000] [--max-epochs 1]

Fills the real replay buffer with ``--size`` synthetic transitions, then runs one model round (TOM's
discriminator and dual, ensemble training capped at ``--max-epochs`` epochs, 100k model rollouts) and a
20-step SAC update, and prints the buffers' sizes and the process's peak RSS (VmHWM). Everything a model round
allocates (float32 copies of the real data, inputs, bootstrap indices, importance weights) is transient, so the
peak is what a long run reaches once the buffer is full.
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import torch as th
from stable_baselines3.common.logger import configure

try:
    import sb3_tom  # noqa: F401
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sb3_tom import MBPO_TOM


def vm_hwm_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1_000_000, help="real transitions")
    parser.add_argument("--max-epochs", type=int, default=1, help="cap on ensemble training epochs")
    parser.add_argument("--json", type=str, default=None)
    args = parser.parse_args()

    model = MBPO_TOM("MlpPolicy", "HalfCheetah-v4", buffer_size=args.size, model_max_epochs=args.max_epochs, seed=0)
    model.set_logger(configure(None, [""]))
    model.num_timesteps = args.size
    baseline = vm_hwm_mb()
    buffer = model.replay_buffer
    assert buffer is not None
    rng = np.random.default_rng(0)
    n = args.size
    buffer.observations[:] = rng.standard_normal(buffer.observations.shape)
    buffer.next_observations[:] = buffer.observations + 0.1 * rng.standard_normal(buffer.observations.shape)
    buffer.actions[:] = rng.uniform(-1, 1, buffer.actions.shape)
    buffer.rewards[:] = rng.standard_normal(buffer.rewards.shape)
    buffer.dones[:] = 0
    buffer.timeouts[:] = 0
    buffer.full, buffer.pos = True, 0
    real_mb = sum(getattr(buffer, k).nbytes for k in ("observations", "next_observations", "actions", "rewards", "dones"))
    real_mb = (real_mb + buffer.timeouts.nbytes) / 2**20
    filled = vm_hwm_mb()

    start = time.perf_counter()
    model.train_model_and_rollout()
    round_s = time.perf_counter() - start
    model._policy_updates(20, model.batch_size)
    model_buffer_mb = model.model_buffer.storage.numel() * model.model_buffer.storage.element_size() / 2**20
    result = {
        "real_transitions": n,
        "real_buffer_mb": real_mb,
        "model_buffer_mb": model_buffer_mb,
        "model_buffer_transitions": len(model.model_buffer),
        "rss_after_setup_mb": baseline,
        "rss_after_fill_mb": filled,
        "peak_rss_mb": vm_hwm_mb(),
        "model_round_s": round_s,
        "torch_threads": th.get_num_threads(),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
