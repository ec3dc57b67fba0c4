"""Episode-start states of the replay buffer: the ``μ0`` samples of TOM's dual problem."""

import torch as th

from sb3_tom.buffers import Transitions


def episode_start_mask(data: Transitions, first_row_is_start: bool = True) -> th.Tensor:
    """
    Mask of the transitions (in chronological order) whose observation is the first of an episode: every
    transition following an episode end (termination or time-limit truncation), and the oldest one if
    ``first_row_is_start`` (true for the very first stored transition; false once a circular buffer wrapped, as its
    oldest row is then usually in the middle of an episode). Should that leave no start at all, the oldest row is
    used.
    """
    if data.episode_ends is None:
        raise ValueError("episode_start_mask needs transitions with episode_ends (real replay-buffer data).")
    mask = th.zeros(len(data), dtype=th.bool, device=data.observations.device)
    if len(data) > 0:
        mask[1:] = data.episode_ends[:-1] > 0
        mask[0] = first_row_is_start or not bool(mask.any())
    return mask
