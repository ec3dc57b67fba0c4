"""
Sample-efficiency study: ``ALGO x ENV x SEED`` runs, each evaluated every ``--eval-freq`` env steps, one JSON per run.

    python benchmarks/sample_efficiency.py                       # the whole study: 3 algorithms x 2 envs x 3 seeds
    python benchmarks/sample_efficiency.py --steps 30000         # extend every run to 30k steps (resumes each one)
    python benchmarks/sample_efficiency.py --algos mbpo_tom --envs Hopper-v4 --seeds 0 1 2 3 4 --jobs 1

Every run uses the hyperparameters shipped with sb3-tom for MBPO and MBPO_TOM (``hyperparams/<algo>.yml``, the
ones RL Zoo uses) and RL Zoo's own ``sac`` hyperparameters for SAC, with SAC's ``learning_starts`` set to MBPO's.
The deterministic policy is evaluated every ``--eval-freq`` steps on a separate env (``--eval-episodes``
episodes). ``benchmarks/results/<algo>_<env>_seed<seed>.json`` holds the evaluations (timesteps, mean and
per-episode returns, wall time), TOM's diagnostics of every model round, the hyperparameters, versions and git
commit (those of a resumed run's earlier parts in ``earlier_versions``). After every evaluation the agent and its
replay buffer are checkpointed under ``--checkpoint-dir`` (kept out of git), once SB3 has stored and trained on that
step's transition: an interrupted study continues each run from its last checkpoint when started again, with no
evaluation or transition lost or repeated; a finished run is extended by asking for more steps. After resuming,
MBPO's first update runs a full model round (the model buffer is not saved), where the uninterrupted run would have
reused its last rollouts. A result whose checkpoint is gone (results are committed, checkpoints are not) counts as
done up to its last evaluation and is never overwritten by a fresh run: extending it needs ``--restart``, which runs
it again from step 0 and replaces the result only once the new run has passed it.

``--jobs 2`` runs two runs side by side with one torch thread each; ``--jobs 1`` runs one at a time with
``--threads`` threads (default: all cores).
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ALGOS = ("mbpo_tom", "mbpo", "sac")
ENVS = ("HalfCheetah-v4", "Hopper-v4")


def run_name(algo: str, env_id: str, seed: int) -> str:
    return f"{algo}_{env_id}_seed{seed}"


def settings(algo: str, env_id: str) -> dict[str, Any]:
    """Constructor arguments of a run (its env: ``zoo.make_env("mbpo", env_id)``, for SAC too)."""
    from sb3_tom import zoo

    if algo != "sac":
        return zoo.hyperparameters(algo, env_id)
    import rl_zoo3
    import yaml

    with open(Path(rl_zoo3.__file__).parent / "hyperparams" / "sac.yml") as file:
        entry = dict(yaml.safe_load(file).get(env_id) or {})
    for key in zoo.ZOO_ONLY_KEYS:
        entry.pop(key, None)
    # the same initial random exploration as MBPO, so that the curves are comparable from the first step
    entry["learning_starts"] = zoo.hyperparameters("mbpo", env_id)["learning_starts"]
    return entry


def versions() -> dict[str, str]:
    import gymnasium
    import mujoco
    import stable_baselines3
    import torch

    import sb3_tom

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from machine import cpu_info

    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return {
        "sb3_tom": sb3_tom.__version__,
        "stable_baselines3": stable_baselines3.__version__,
        "torch": torch.__version__,
        "gymnasium": gymnasium.__version__,
        "mujoco": mujoco.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        **cpu_info(),
        "git_commit": commit,
    }


def latest_checkpoint(directory: Path) -> Path | None:
    """The newest complete checkpoint (its ``state.json`` is written last)."""
    done = [p for p in directory.glob("step_*") if (p / "state.json").exists()]
    return max(done, key=lambda p: int(p.name.split("_")[1]), default=None)


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def train_one(args: argparse.Namespace, algo: str, env_id: str, seed: int) -> None:
    """Run (or resume, or extend) one run up to ``args.steps`` env steps."""
    import torch as th
    from stable_baselines3 import SAC
    from stable_baselines3.common.callbacks import BaseCallback, CallbackList
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.monitor import Monitor

    from sb3_tom import MBPO, MBPO_TOM, zoo

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from tom_diagnostics import ModelRoundRecorder

    if args.threads is not None:
        th.set_num_threads(args.threads)
    name = run_name(algo, env_id, seed)
    checkpoints = Path(args.checkpoint_dir) / name
    result_path = Path(args.results_dir) / f"{name}.json"
    params = settings(algo, env_id)
    params.update(json.loads(args.override).get(algo, {}))
    cls = {"mbpo_tom": MBPO_TOM, "mbpo": MBPO, "sac": SAC}[algo]
    env = Monitor(zoo.make_env("mbpo", env_id))
    eval_env = Monitor(zoo.make_env("mbpo", env_id))
    eval_env.reset(seed=seed + 10_000)

    previous = json.loads(result_path.read_text()) if result_path.exists() else {}
    previous_steps = max((e["timesteps"] for e in previous.get("evaluations", [])), default=0)
    resume = None if args.restart else latest_checkpoint(checkpoints)
    if resume is None and previous_steps and not args.restart:
        # results are committed, checkpoints are not: a fresh run here would silently replace a finished result
        if previous_steps >= args.steps:
            print(f"[{name}] done ({args.steps} steps, in {result_path}; no checkpoint)", flush=True)
            return
        sys.exit(
            f"[{name}] {result_path} holds {previous_steps} steps but {checkpoints} has no checkpoint to extend it "
            f"from. Pass --restart to run it again from step 0 (the new run replaces that result once it has passed "
            f"{previous_steps} steps), or ask for --steps {previous_steps} or fewer."
        )
    if resume is not None:
        state = json.loads((resume / "state.json").read_text())
        model = cls.load(resume / "agent.zip", env=env, device="cpu")
        model.load_replay_buffer(resume / "replay_buffer.pkl")
        # recorded, since a resumed MBPO run starts with an extra model round (its model buffer is not saved)
        state.setdefault("resumed_at", []).append(model.num_timesteps)
        print(f"[{name}] resuming at step {model.num_timesteps}", flush=True)
    else:
        state = {
            "algo": algo,
            "env": env_id,
            "seed": seed,
            "hyperparameters": params,
            "eval_freq": args.eval_freq,
            "eval_episodes": args.eval_episodes,
            "evaluations": [],
            "resumed_at": [],
            "model_rounds": [],
            "wall_time_s": 0.0,
        }
        model = cls("MlpPolicy", env, seed=seed, device="cpu", **params)
    if "versions" in state:  # a resumed run: keep what the earlier parts ran on (code, CPU) before the new part's
        state.setdefault("earlier_versions", []).append(state["versions"])
    state["versions"] = versions()
    state["threads"] = th.get_num_threads()
    if state["evaluations"] and state["evaluations"][-1]["timesteps"] >= args.steps:
        print(f"[{name}] done ({args.steps} steps)", flush=True)
        return
    recorder = ModelRoundRecorder() if isinstance(model, MBPO) else None
    started = time.perf_counter()
    base_wall = float(state["wall_time_s"])

    def checkpoint() -> None:
        step = model.num_timesteps
        state["steps"] = step
        target = checkpoints / f"step_{step}"
        target.mkdir(parents=True, exist_ok=True)
        model.save(target / "agent.zip")
        model.save_replay_buffer(target / "replay_buffer.pkl")
        write_json(target / "state.json", state)
        for old in checkpoints.glob("step_*"):
            if old != target:
                shutil.rmtree(old)
        if step >= previous_steps:  # a restarted run keeps the old result until it has passed it
            result_path.parent.mkdir(parents=True, exist_ok=True)
            write_json(result_path, state)

    class EvaluateAndCheckpoint(BaseCallback):
        """Evaluates at every ``eval_freq``-th step, and checkpoints once SB3 has stored and trained on that step."""

        pending = False

        def _on_step(self) -> bool:
            step = self.model.num_timesteps
            if step % args.eval_freq != 0:
                return True
            returns, _ = evaluate_policy(
                self.model, eval_env, n_eval_episodes=args.eval_episodes, deterministic=True, return_episode_rewards=True
            )
            wall = base_wall + time.perf_counter() - started
            state["evaluations"].append(
                {
                    "timesteps": step,
                    "mean_return": float(sum(returns) / len(returns)),
                    "returns": [float(r) for r in returns],
                    "wall_time_s": wall,
                }
            )
            if recorder is not None:
                state["model_rounds"] += recorder.rounds
                recorder.rounds.clear()
            state["wall_time_s"] = wall
            print(
                f"[{name}] step {step}: return {state['evaluations'][-1]['mean_return']:.1f} ({wall / 60:.1f} min)", flush=True
            )
            self.pending = True
            return True

        def _on_rollout_start(self) -> None:
            # the step's transition is stored (and trained on) after `_on_step`: the next rollout is the first moment
            # a checkpoint holds it
            if self.pending:
                checkpoint()
                self.pending = False

    # the recorder first: it reads what the last model round logged before the evaluation may dump the logger
    evaluate = EvaluateAndCheckpoint()
    callbacks = [evaluate] if recorder is None else [recorder, evaluate]
    until = args.steps if args.stop_after is None else min(args.steps, args.stop_after)
    model.learn(until - model.num_timesteps, callback=CallbackList(callbacks), reset_num_timesteps=resume is None)
    if evaluate.pending:
        checkpoint()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algos", nargs="+", default=list(ALGOS), choices=ALGOS)
    parser.add_argument("--envs", nargs="+", default=list(ENVS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=15_000, help="env steps per run (more extends finished runs)")
    parser.add_argument("--eval-freq", type=int, default=1000)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=2, help="runs side by side, one torch thread each when > 1")
    parser.add_argument("--threads", type=int, default=None, help="torch threads of each run (default: 1 with --jobs > 1)")
    parser.add_argument("--results-dir", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--checkpoint-dir", default=str(ROOT / "benchmarks" / "checkpoints"))
    parser.add_argument(
        "--override", default="{}", help='constructor arguments replacing the shipped ones, per algorithm: {"sac": {...}}'
    )
    parser.add_argument(
        "--restart",
        action="store_true",
        help="run again from step 0, ignoring checkpoints (needed to extend a result whose checkpoint is gone)",
    )
    parser.add_argument("--stop-after", type=int, default=None, help=argparse.SUPPRESS)  # tests: interrupt a run
    parser.add_argument("--run", nargs=3, metavar=("ALGO", "ENV", "SEED"), help=argparse.SUPPRESS)  # one worker
    args = parser.parse_args()

    if args.run is not None:
        algo, env_id, seed = args.run
        train_one(args, algo, env_id, int(seed))
        return
    runs = [(env_id, seed, algo) for seed in args.seeds for env_id in args.envs for algo in args.algos]
    threads = args.threads if args.threads is not None else (1 if args.jobs > 1 else None)
    common = [
        "--steps", str(args.steps), "--eval-freq", str(args.eval_freq), "--eval-episodes", str(args.eval_episodes),
        "--results-dir", args.results_dir, "--checkpoint-dir", args.checkpoint_dir, "--override", args.override,
    ]  # fmt: skip
    if threads is not None:
        common += ["--threads", str(threads)]
    if args.stop_after is not None:
        common += ["--stop-after", str(args.stop_after)]
    if args.restart:
        common.append("--restart")
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads is not None else {})}
    print(f"{len(runs)} runs to {args.steps} steps, {args.jobs} at a time ({threads or 'default'} torch threads each)")

    def launch(run: tuple[str, int, str]) -> int:
        env_id, seed, algo = run
        command = [sys.executable, __file__, "--run", algo, env_id, str(seed), *common]
        return subprocess.run(command, env=env).returncode

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        codes = list(pool.map(launch, runs))
    failed = [run_name(algo, env_id, seed) for (env_id, seed, algo), code in zip(runs, codes, strict=True) if code]
    if failed:
        sys.exit(f"failed runs: {', '.join(failed)}")


if __name__ == "__main__":
    main()
