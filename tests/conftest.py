import os

import matplotlib
import torch as th

matplotlib.use("Agg")

# pytest-xdist runs one worker per core: one torch thread each avoids oversubscribing the CPU
if os.environ.get("PYTEST_XDIST_WORKER"):
    th.set_num_threads(1)


# Tiny MBPO settings so that a few hundred env steps run in seconds (shared by the MBPO and TOM tests)
TINY_MBPO = dict(
    gradient_steps=1,
    batch_size=64,
    ensemble_size=3,
    num_elites=2,
    dynamics_hidden_sizes=[32, 32],
)


def env_transitions(env_id: str, n: int, action_mean: float = 0.0, action_std: float | None = None, seed: int = 0):
    """
    ``n`` real transitions ``(obs, actions, rewards, next_obs, terminated)`` of a Gymnasium env as float32 tensors, with
    uniform random actions (``action_std=None``) or actions ``clip(action_mean + action_std * N(0, 1), -1, 1)`` scaled
    to the action space. Episodes are reset on termination or truncation.
    """
    import gymnasium as gym
    import numpy as np

    env = gym.make(env_id)
    rng = np.random.default_rng(seed)
    low, high = env.action_space.low, env.action_space.high
    columns: list[list] = [[], [], [], [], []]
    obs, _ = env.reset(seed=seed)
    for _ in range(n):
        if action_std is None:
            scaled = rng.uniform(-1, 1, size=low.shape)
        else:
            scaled = np.clip(action_mean + action_std * rng.standard_normal(low.shape), -1, 1)
        next_obs, reward, terminated, truncated, _ = env.step(low + (scaled + 1) * 0.5 * (high - low))
        for column, value in zip(columns, (obs, scaled, reward, next_obs, float(terminated)), strict=True):
            column.append(value)
        obs = env.reset()[0] if terminated or truncated else next_obs
    env.close()
    return tuple(th.as_tensor(np.array(column), dtype=th.float32) for column in columns)
