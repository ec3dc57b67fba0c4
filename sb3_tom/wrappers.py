"""Environment wrappers named by the shipped RL Zoo hyperparameter files (``env_wrapper``)."""

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class TruncatedObservation(gym.ObservationWrapper):
    """
    Keeps the first ``size`` entries of a flat ``Box`` observation. With ``size=45`` on Humanoid-v4 this is MBPO's
    ``HumanoidTruncatedObs`` (joint positions without x, y and joint velocities: ``qpos[2:]`` and ``qvel``), which
    Humanoid-v5 gives with its ``include_*_in_observation=False`` options.

    :param env: Environment with a 1-D ``Box`` observation space.
    :param size: Number of leading observation entries to keep.
    """

    def __init__(self, env: gym.Env, size: int) -> None:
        super().__init__(env)
        space = env.observation_space
        if not isinstance(space, spaces.Box) or len(space.shape) != 1:
            raise ValueError(f"TruncatedObservation needs a 1-D Box observation space, got {space}.")
        if not 0 < size <= space.shape[0]:
            raise ValueError(f"TruncatedObservation size must be in [1, {space.shape[0]}], got {size}.")
        self.size = size
        self.observation_space = spaces.Box(space.low[:size], space.high[:size], dtype=space.dtype)  # type: ignore[arg-type]

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return observation[: self.size]
