"""
Train MBPO_TOM (or MBPO) on a MuJoCo task with a progress bar; save the agent, checkpoints and a learning curve.

    python examples/train.py --algo mbpo_tom --env HalfCheetah-v4 --steps 30000
    python examples/train.py ... --resume   # continue from the latest checkpoint of the same run directory
    python examples/train.py ... --threads 1  # one torch thread: for several runs side by side

The agent is built with the per-environment hyperparameters shipped with sb3-tom (``hyperparams/<algo>.yml``, the
ones RL Zoo uses, e.g. 40 SAC updates per step on HalfCheetah, Hopper's rollout-length schedule) and the
environment options of that file; an environment without an entry gets the class defaults. The script prints
which it used.

Outputs go to ``<log-dir>/<algo>_<env>_seed<seed>/``: ``agent.zip``, ``replay_buffer.pkl``, ``checkpoints/``,
``monitor.csv``, ``evaluations.npz`` and ``learning_curve.png``.
"""

import argparse
import re
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch as th
from stable_baselines3.common.callbacks import CallbackList, CheckpointCallback, EvalCallback
from stable_baselines3.common.monitor import Monitor, load_results

from sb3_tom import MBPO, MBPO_TOM, zoo

ALGOS = {"mbpo": MBPO, "mbpo_tom": MBPO_TOM}


def latest_checkpoint(directory: Path) -> tuple[Path, Path] | None:
    """The newest ``(agent, replay_buffer)`` pair saved by the CheckpointCallback."""
    agents = sorted(directory.glob("agent_*_steps.zip"), key=lambda p: int(re.findall(r"(\d+)_steps", p.name)[0]))
    for agent in reversed(agents):
        steps = re.findall(r"(\d+)_steps", agent.name)[0]
        buffer = directory / f"agent_replay_buffer_{steps}_steps.pkl"
        if buffer.exists():
            return agent, buffer
    return None


def plot_learning_curve(run_dir: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    monitor = load_results(str(run_dir))
    if len(monitor) > 0:
        steps = np.cumsum(monitor["l"].to_numpy())
        ax.plot(steps, monitor["r"].to_numpy(), alpha=0.3, label="training episodes (stochastic)")
    evaluations = run_dir / "evaluations.npz"
    if evaluations.exists():
        data = np.load(evaluations)
        mean, std = data["results"].mean(axis=1), data["results"].std(axis=1)
        ax.plot(data["timesteps"], mean, marker="o", label="evaluation (deterministic)")
        ax.fill_between(data["timesteps"], mean - std, mean + std, alpha=0.2)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("episode return")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    path = run_dir / "learning_curve.png"
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def shipped_settings(algo: str, env_id: str) -> tuple[dict, Callable[[], gym.Env], str]:
    """``(constructor arguments, a function that builds the env, where they came from)`` for ``algo`` on ``env_id``."""
    try:
        params = zoo.hyperparameters(algo, env_id)
    except ValueError:
        source = f"the {ALGOS[algo].__name__} defaults (hyperparams/{algo}.yml has no entry for {env_id})"
        return {}, lambda: gym.make(env_id), source
    return params, lambda: zoo.make_env(algo, env_id), f"hyperparams/{algo}.yml, {env_id}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", choices=sorted(ALGOS), default="mbpo_tom")
    parser.add_argument("--env", default="HalfCheetah-v4")
    parser.add_argument("--steps", type=int, default=15_000, help="total environment steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-dir", default="logs")
    parser.add_argument("--eval-freq", type=int, default=2500)
    parser.add_argument("--checkpoint-freq", type=int, default=5000)
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice; 1 per run side by side)"
    )
    args = parser.parse_args()
    if args.threads is not None:
        th.set_num_threads(args.threads)

    algo = ALGOS[args.algo]
    run_dir = Path(args.log_dir) / f"{args.algo}_{args.env}_seed{args.seed}"
    checkpoints = run_dir / "checkpoints"
    run_dir.mkdir(parents=True, exist_ok=True)
    params, make_env, source = shipped_settings(args.algo, args.env)
    env = Monitor(make_env(), str(run_dir / "monitor.csv"), override_existing=not args.resume)

    resume_from = latest_checkpoint(checkpoints) if args.resume else None
    if resume_from is not None:
        agent_path, buffer_path = resume_from
        print(f"Resuming from {agent_path}")
        model = algo.load(agent_path, env=env, device=args.device)
        model.load_replay_buffer(buffer_path)
    else:
        print(f"Hyperparameters from {source}: {params}; {th.get_num_threads()} torch thread(s)")
        params = {"policy": "MlpPolicy", **params}
        model = algo(env=env, seed=args.seed, verbose=0, device=args.device, tensorboard_log=str(run_dir / "tb"), **params)

    callbacks = CallbackList(
        [
            EvalCallback(
                Monitor(make_env()),
                eval_freq=args.eval_freq,
                n_eval_episodes=5,
                deterministic=True,
                log_path=str(run_dir),
                best_model_save_path=str(run_dir),
                verbose=0,
            ),
            CheckpointCallback(args.checkpoint_freq, str(checkpoints), name_prefix="agent", save_replay_buffer=True),
        ]
    )
    remaining = args.steps - model.num_timesteps
    if remaining > 0:
        model.learn(remaining, callback=callbacks, progress_bar=True, reset_num_timesteps=resume_from is None)
    model.save(run_dir / "agent.zip")
    model.save_replay_buffer(run_dir / "replay_buffer.pkl")
    curve = plot_learning_curve(run_dir, f"{args.algo.upper()} on {args.env}")
    print(f"Saved {run_dir / 'agent.zip'} and {curve}")


if __name__ == "__main__":
    main()
