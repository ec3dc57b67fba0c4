"""Learning test: MBPO solves InvertedPendulum-v4 within 5,000 env steps (fixed seed).

MBPO_TOM does not reach 900 within 5,000 steps with these settings yet (about 60-100 on seeds 0 and 1): the
learning criterion of TOM is open work, so it is not asserted here.
"""

import gymnasium as gym
import pytest
from stable_baselines3.common.callbacks import EvalCallback, StopTrainingOnRewardThreshold
from stable_baselines3.common.monitor import Monitor

from sb3_tom import MBPO

# Defaults except: shorter initial exploration, fewer updates per step, a smaller rollout batch and an epoch cap on
# model training, to keep each test to a few minutes on 2 CPU cores.
SETTINGS = dict(
    learning_starts=500,
    gradient_steps=5,
    rollout_batch_size=5000,
    model_max_epochs=20,
    seed=0,
)


@pytest.mark.slow
def test_mbpo_inverted_pendulum_reaches_900():
    algo = MBPO
    model = algo("MlpPolicy", "InvertedPendulum-v4", **SETTINGS)
    stop = StopTrainingOnRewardThreshold(reward_threshold=900, verbose=0)
    evaluation = EvalCallback(
        Monitor(gym.make("InvertedPendulum-v4")),
        eval_freq=250,
        n_eval_episodes=5,
        deterministic=True,
        callback_on_new_best=stop,
        verbose=0,
    )
    model.learn(5000, callback=evaluation)
    print(f"{algo.__name__}: best deterministic return {evaluation.best_mean_reward} at {model.num_timesteps} steps")
    assert evaluation.best_mean_reward >= 900
    assert model.num_timesteps <= 5000
