"""
Train MBPO_TOM on Hopper-v4 and plot the average TOM weight by position in the replay buffer (older → newer,
20 chunks): the paper's diagnostic. Weights are low on data from early random behaviour and rise toward recent data.

    python examples/plot_weights.py --steps 20000 --out logs/tom_weights.png
"""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from sb3_tom import MBPO_TOM, zoo


def weights_by_position(model: MBPO_TOM, n_chunks: int = 20) -> np.ndarray:
    """Mean weight of each of ``n_chunks`` equal chunks of the real buffer, oldest first."""
    data = model._real_data()
    weights = model.transition_weights(
        data.observations.cpu().numpy(),
        data.actions.cpu().numpy(),
        data.next_observations.cpu().numpy(),
        data.terminated.cpu().numpy(),
    )
    return np.array([chunk.mean() for chunk in np.array_split(weights, n_chunks)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="Hopper-v4")
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="logs/tom_weights.png")
    parser.add_argument("--fast", action="store_true", help="small settings for a quick look (minutes)")
    args = parser.parse_args()

    # the shipped per-env hyperparameters (those RL Zoo uses), when the env has an entry
    try:
        kwargs: dict = zoo.hyperparameters("mbpo_tom", args.env)
    except ValueError:
        kwargs = {}
    kwargs["seed"] = args.seed
    if args.fast:  # TOM starts once the policy collected policy_buffer_size transitions after learning_starts
        kwargs.update(
            learning_starts=500,
            gradient_steps=2,
            rollout_batch_size=2000,
            model_max_epochs=10,
            policy_buffer_size=500,
            dual_steps=300,
            discriminator_steps=200,
        )
    model = MBPO_TOM("MlpPolicy", args.env, **kwargs)
    model.learn(args.steps, progress_bar=True)
    means = weights_by_position(model)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(np.arange(len(means)), means, color="tab:blue")
    ax.axhline(1.0, color="gray", linestyle="--", linewidth=1, label="buffer mean")
    ax.set_xlabel("replay buffer position (20 chunks, older → newer)")
    ax.set_ylabel("average TOM weight")
    ax.set_title(f"MBPO_TOM on {args.env} after {model.num_timesteps} steps")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(f"Saved {out}; chunk means: {np.round(means, 3).tolist()}")


if __name__ == "__main__":
    main()
