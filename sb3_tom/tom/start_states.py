"""Episode-start states of the replay buffer: the ``μ0`` samples of TOM's dual problem."""

import torch as th

from sb3_tom.buffers import Transitions


def episode_start_mask(data: Transitions) -> th.Tensor:
    """
    Mask of the transitions (in chronological order) whose observation is the first of an episode: the first
    stored transition and every transition following an episode end (termination or time-limit truncation).
    """
    if data.episode_ends is None:
        raise ValueError("episode_start_mask needs transitions with episode_ends (real replay-buffer data).")
    mask = th.zeros(len(data), dtype=th.bool, device=data.observations.device)
    if len(data) > 0:
        mask[0] = True
        mask[1:] = data.episode_ends[:-1] > 0
    return mask
