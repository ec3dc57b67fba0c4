"""
Several runs on one machine: env steps per second of the default HalfCheetah-v4 workload (MBPO_TOM with the shipped
hyperparameters) for one run with all threads against N runs side by side with one torch thread each.

    python benchmarks/thread_layout.py --steps 300 --json thread_layout.json

Each run does ``--warmup`` random steps (``learning_starts``), its first model rounds, then ``--steps`` steps of
40 SAC updates each with model rounds every 250 steps; only those last steps are timed (after a full model round has
run, so every layout times the same mix of work). Throughput is runs x steps / wall time of the slowest run.
"""

import argparse
import json
import os
import subprocess
import sys
import time

CHILD = """
import sys, time, torch as th
from stable_baselines3.common.callbacks import BaseCallback
from sb3_tom import MBPO_TOM, zoo
threads, warmup, steps, seed = (int(x) for x in sys.argv[1:5])
th.set_num_threads(threads)
params = {**zoo.hyperparameters("mbpo_tom", "HalfCheetah-v4"), "learning_starts": warmup}
model = MBPO_TOM("MlpPolicy", "HalfCheetah-v4", seed=seed, **params)
marks = {}
class Clock(BaseCallback):
    def _on_step(self):
        if self.num_timesteps in (warmup + 1, warmup + 1 + steps):
            marks[self.num_timesteps] = time.perf_counter()
        return True
model.learn(warmup + 1 + steps, callback=Clock())
print(marks[warmup + 1 + steps] - marks[warmup + 1])
"""


def layout(runs: int, threads: int, warmup: int, steps: int) -> dict[str, float]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    procs = [
        subprocess.Popen([sys.executable, "-c", CHILD, str(threads), str(warmup), str(steps), str(seed)], env=env,
                         stdout=subprocess.PIPE, text=True)
        for seed in range(runs)
    ]  # fmt: skip
    timed = [float(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    wall = time.perf_counter() - start
    return {
        "runs": runs,
        "threads_per_run": threads,
        "timed_seconds_per_run": timed,
        "env_steps_per_second_per_run": [steps / t for t in timed],
        "env_steps_per_second_total": runs * steps / max(timed),
        "wall_seconds": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300, help="timed env steps per run (after the first model round)")
    parser.add_argument("--warmup", type=int, default=1000, help="random steps before the first model round")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    results = [layout(1, args.cores, args.warmup, args.steps), layout(args.cores, 1, args.warmup, args.steps)]
    one, many = results
    ratio = many["env_steps_per_second_total"] / one["env_steps_per_second_total"]
    for r in results:
        print(
            f"{r['runs']} run(s) x {r['threads_per_run']} thread(s): {r['env_steps_per_second_total']:.2f} env steps/s in all "
            f"({', '.join(f'{x:.2f}' for x in r['env_steps_per_second_per_run'])} per run)"
        )
    print(f"{args.cores} one-thread runs side by side finish {ratio:.2f}x the env steps of one {args.cores}-thread run")
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"layouts": results, "side_by_side_over_one_run": ratio}, file, indent=1)


if __name__ == "__main__":
    main()
