"""Branched rollouts of the learned model under the current policy (MBPO step 2)."""

from collections.abc import Callable
from dataclasses import dataclass

import torch as th

from sb3_tom.buffers import ModelReplayBuffer, Transitions
from sb3_tom.dynamics.ensemble import GaussianEnsemble
from sb3_tom.dynamics.termination import TerminationFn

ActionSampler = Callable[[th.Tensor], th.Tensor]


@dataclass
class RolloutStats:
    """What one batch of branched rollouts produced."""

    terminated_fraction: float  # fraction of rollouts that ended in a predicted terminal state
    n_nonfinite: int  # samples dropped because the model produced NaN/inf
    mean_length: float


@th.inference_mode()
def branched_rollout(
    dynamics: GaussianEnsemble,
    sample_actions: ActionSampler,
    termination_fn: TerminationFn,
    start_observations: th.Tensor,
    length: int,
    buffer: ModelReplayBuffer,
) -> RolloutStats:
    """
    Roll the model forward ``length`` steps from each start state with the current stochastic policy.

    Each sample uses a random elite at each step; rollouts that reach a predicted terminal state stop; samples
    whose prediction is not finite are dropped (and counted). Transitions are appended to ``buffer``.

    :param dynamics: Trained ensemble.
    :param sample_actions: Maps observations to (scaled) actions sampled from the current policy.
    :param termination_fn: ``(obs, action, next_obs) -> bool`` terminal mask.
    :param start_observations: ``(n, obs_dim)`` start states.
    :param length: Rollout length ``k``.
    :param buffer: Model buffer receiving the transitions.
    """
    obs = start_observations
    n_start = obs.shape[0]
    n_transitions = n_terminated = n_nonfinite = 0
    for _ in range(length):
        if obs.shape[0] == 0:
            break
        actions = sample_actions(obs)
        next_obs, rewards = dynamics.sample(obs, actions)
        finite = th.isfinite(next_obs).all(dim=1) & th.isfinite(rewards)
        n_bad = int((~finite).sum())
        if n_bad:
            n_nonfinite += n_bad
            obs, actions, next_obs, rewards = obs[finite], actions[finite], next_obs[finite], rewards[finite]
        terminated = termination_fn(obs, actions, next_obs).reshape(-1).bool()
        buffer.add(Transitions(obs, actions, rewards, next_obs, terminated.float()))
        n_transitions += obs.shape[0]
        n_terminated += int(terminated.sum())
        obs = next_obs[~terminated]
    return RolloutStats(
        terminated_fraction=n_terminated / max(n_start, 1),
        n_nonfinite=n_nonfinite,
        mean_length=n_transitions / max(n_start, 1),
    )
