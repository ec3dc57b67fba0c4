"""Learning tests: MBPO and MBPO_TOM solve InvertedPendulum-v4 within 5,000 env steps (fixed seed).

Both start from the shipped RL Zoo hyperparameters for InvertedPendulum-v4 (``hyperparams/<algo>.yml``: 250-step
epochs, G=10, the MBPO paper's target entropy -0.05) with smaller model rounds to keep each test to a few minutes on
2 CPU cores: 5,000 rollouts per round instead of 100,000 and at most 20 ensemble epochs per round.
"""

import gymnasium as gym
import pytest
from stable_baselines3.common.callbacks import EvalCallback, StopTrainingOnRewardThreshold
from stable_baselines3.common.monitor import Monitor

from sb3_tom import MBPO, MBPO_TOM
from sb3_tom.zoo import hyperparameters

ENV_ID = "InvertedPendulum-v4"
REDUCTIONS = dict(rollout_batch_size=5000, model_max_epochs=20)


@pytest.mark.slow
@pytest.mark.parametrize("algo, name", [(MBPO, "mbpo"), (MBPO_TOM, "mbpo_tom")])
def test_inverted_pendulum_reaches_900(algo, name):
    params = {**hyperparameters(name, ENV_ID), **REDUCTIONS}
    assert params["learning_starts"] == 500 and params["gradient_steps"] == 10 and params["target_entropy"] == -0.05
    model = algo("MlpPolicy", ENV_ID, seed=0, **params)
    stop = StopTrainingOnRewardThreshold(reward_threshold=900, verbose=0)
    evaluation = EvalCallback(
        Monitor(gym.make(ENV_ID)),
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
    if algo is MBPO_TOM:  # TOM's weighted model learning ran, not only plain maximum likelihood
        assert model._weight_reference is not None
