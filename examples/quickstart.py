"""Quickstart: train, evaluate, save, load and continue training MBPO_TOM (a few minutes on a laptop CPU)."""

import gymnasium as gym
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_tom import MBPO_TOM

env_id = "InvertedPendulum-v4"

# Smaller-than-default settings so this runs in minutes; drop them for the paper's defaults.
model = MBPO_TOM(
    "MlpPolicy",
    env_id,
    learning_starts=500,
    gradient_steps=5,
    rollout_batch_size=5000,
    model_max_epochs=20,
    policy_buffer_size=500,
    seed=0,
    verbose=1,
)
model.learn(total_timesteps=3000, progress_bar=True)

mean_return, std_return = evaluate_policy(model, gym.make(env_id), n_eval_episodes=5, deterministic=True)
print(f"Deterministic return after 3000 steps: {mean_return:.1f} +/- {std_return:.1f}")

model.save("mbpo_tom_pendulum")
model.save_replay_buffer("mbpo_tom_pendulum_buffer")
del model

# Load everything needed to predict and to continue training where it left off
model = MBPO_TOM.load("mbpo_tom_pendulum", env=gym.make(env_id))
model.load_replay_buffer("mbpo_tom_pendulum_buffer")
obs, _ = gym.make(env_id).reset(seed=0)
action, _ = model.predict(obs, deterministic=True)
print("Action of the loaded agent:", action)
model.learn(total_timesteps=1000, reset_num_timesteps=False)
print("Continued to", model.num_timesteps, "steps")
