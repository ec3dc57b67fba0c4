"""Buffers of model-based training: the model-rollout buffer, views of the real replay buffer, mixed batches."""

from dataclasses import dataclass

import numpy as np
import torch as th
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.type_aliases import ReplayBufferSamples

from sb3_tom import tuning


@dataclass
class Transitions:
    """A batch of transitions as tensors; ``terminated`` excludes time-limit truncations."""

    observations: th.Tensor
    actions: th.Tensor
    rewards: th.Tensor  # (n,)
    next_observations: th.Tensor
    terminated: th.Tensor  # (n,) float 0/1
    episode_ends: th.Tensor | None = None  # (n,) float 0/1, terminated or truncated (real data only)

    def __len__(self) -> int:
        return self.observations.shape[0]

    def index(self, idx: th.Tensor) -> "Transitions":
        return Transitions(
            self.observations[idx],
            self.actions[idx],
            self.rewards[idx],
            self.next_observations[idx],
            self.terminated[idx],
            None if self.episode_ends is None else self.episode_ends[idx],
        )


def real_buffer_size(buffer: ReplayBuffer) -> int:
    """
    Number of usable transitions in an SB3 replay buffer: those stored, less one in a full buffer with
    ``optimize_memory_usage``, whose row at ``pos`` already holds the newest next observation as its observation
    (beside its old action and reward; SB3's ``sample`` never draws it either).
    """
    if not buffer.full:
        return buffer.pos
    return buffer.buffer_size - int(buffer.optimize_memory_usage)


def sample_real_indices(buffer: ReplayBuffer, size: int) -> np.ndarray:
    """``size`` storage indices of usable transitions (:func:`real_buffer_size`), drawn uniformly with replacement."""
    if buffer.full and buffer.optimize_memory_usage:  # as SB3: every row but the one at ``pos``
        return (np.random.randint(1, buffer.buffer_size, size=size) + buffer.pos) % buffer.buffer_size
    return np.random.randint(0, real_buffer_size(buffer), size=size)


def real_transitions(buffer: ReplayBuffer, device: th.device | str, indices: np.ndarray | None = None) -> Transitions:
    """
    Transitions of an SB3 ``ReplayBuffer`` (single env) as tensors at the storage ``indices`` (default: every usable
    transition, oldest first, :func:`chronological_indices`).

    Time-limit truncations are not terminals: ``terminated = dones * (1 - timeouts)``.
    """
    if buffer.n_envs != 1:
        raise ValueError("Only single-environment replay buffers are supported.")
    if indices is None:
        indices = chronological_indices(buffer)
    n = len(indices)
    if buffer.optimize_memory_usage:  # next observations are the following rows of ``observations``
        next_obs_store, next_indices = buffer.observations, (indices + 1) % buffer.buffer_size
    else:
        next_obs_store, next_indices = buffer.next_observations, indices

    def gather(array: np.ndarray, rows: np.ndarray) -> th.Tensor:
        # float32 rows of ``array[rows, 0]``, converted a chunk at a time: a float64 buffer is never copied whole
        out = np.empty((n, *array.shape[2:]), dtype=np.float32)
        chunk = tuning.GATHER_CHUNK_ROWS
        for start in range(0, n, chunk):
            out[start : start + chunk] = array[rows[start : start + chunk], 0]
        return th.as_tensor(out.reshape(n, int(np.prod(array.shape[2:]))) if out.ndim > 1 else out, device=device)

    dones = gather(buffer.dones, indices)
    return Transitions(
        gather(buffer.observations, indices),
        gather(buffer.actions, indices),
        gather(buffer.rewards, indices),
        gather(next_obs_store, next_indices),
        dones * (1.0 - gather(buffer.timeouts, indices)),
        dones,
    )


def end_last_episode(buffer: ReplayBuffer) -> None:
    """
    Mark the newest stored transition as a time-limit truncation (``dones = timeouts = 1``) unless it already ends an
    episode: the env is about to be reset in the middle of that episode, so the next stored transition starts a new
    one. Not a terminal: targets still bootstrap through it (``terminated = dones * (1 - timeouts)``). With
    ``optimize_memory_usage`` its next observation is about to be overwritten by the reset one, so it becomes a
    terminal instead, as SB3 itself does there.
    """
    if real_buffer_size(buffer) == 0:
        return
    last = (buffer.pos - 1) % buffer.buffer_size
    unfinished = buffer.dones[last] == 0
    if not buffer.optimize_memory_usage:
        buffer.timeouts[last][unfinished] = 1.0
    buffer.dones[last][unfinished] = 1.0


def recent_mask(n: int, window: int, device: th.device | str = "cpu") -> th.Tensor:
    """Mask of the ``window`` most recent of ``n`` chronologically ordered transitions (the current policy's footprint)."""
    mask = th.zeros(n, dtype=th.bool, device=device)
    mask[max(n - window, 0) :] = True
    return mask


def chronological_indices(buffer: ReplayBuffer) -> np.ndarray:
    """Storage indices of the usable transitions of an SB3 replay buffer (:func:`real_buffer_size`), oldest first."""
    n = real_buffer_size(buffer)
    if not buffer.full:
        return np.arange(n)
    return (np.arange(buffer.buffer_size - n, buffer.buffer_size) + buffer.pos) % buffer.buffer_size


class ModelReplayBuffer:
    """
    Preallocated circular buffer of model-generated transitions, stored as tensors on ``device``.

    :param capacity: Maximum number of transitions.
    :param obs_dim: Observation size.
    :param action_dim: Action size.
    :param device: Torch device of the storage.
    """

    def __init__(self, capacity: int, obs_dim: int, action_dim: int, device: th.device | str = "cpu") -> None:
        if capacity < 1:
            raise ValueError(f"Model buffer capacity must be positive, got {capacity}.")
        self.capacity = capacity
        self.obs_dim = obs_dim
        self.action_dim = action_dim
        self.device = th.device(device)
        # One row per transition: obs | action | reward | next_obs | terminated
        self.storage = th.zeros(capacity, 2 * obs_dim + action_dim + 2, device=self.device)
        self.pos = 0
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def add(self, transitions: Transitions) -> None:
        """Append a batch of transitions (overwriting the oldest when full)."""
        rows = th.cat(
            [
                transitions.observations,
                transitions.actions,
                transitions.rewards.reshape(-1, 1),
                transitions.next_observations,
                transitions.terminated.reshape(-1, 1),
            ],
            dim=1,
        ).to(self.device)
        rows = rows[-self.capacity :]  # the newest ``capacity`` rows (all of them when fewer)
        n = rows.shape[0]
        # up to the end of the storage, then the rest (if any) from its start
        first = min(n, self.capacity - self.pos)
        self.storage[self.pos : self.pos + first] = rows[:first]
        self.storage[: n - first] = rows[first:]
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def clear(self) -> None:
        """Forget every stored transition (the storage is kept)."""
        self.pos = 0
        self.size = 0

    def _split(self, rows: th.Tensor) -> Transitions:
        o, a = self.obs_dim, self.action_dim
        return Transitions(
            rows[:, :o],
            rows[:, o : o + a],
            rows[:, o + a],
            rows[:, o + a + 1 : 2 * o + a + 1],
            rows[:, -1],
        )

    def sample(self, n: int) -> Transitions:
        """``n`` uniformly sampled stored transitions (with replacement)."""
        if self.size == 0:
            raise ValueError("The model buffer is empty.")
        return self._split(self.storage[th.randint(self.size, (n,), device=self.device)])

    def all(self) -> Transitions:
        """Every stored transition, oldest first (until the buffer is full, ``pos == size``: rows ``[0, size)``)."""
        return self._split(th.cat([self.storage[self.pos : self.size], self.storage[: self.pos]]))

    def resized(self, capacity: int) -> "ModelReplayBuffer":
        """A new buffer of ``capacity`` holding the most recent transitions of this one."""
        new = ModelReplayBuffer(capacity, self.obs_dim, self.action_dim, self.device)
        new.add(self.all())
        return new


class MixedBatchSampler:
    """
    Replay-buffer stand-in whose ``sample`` returns SAC batches with exactly ``n_real`` real transitions and
    ``batch_size - n_real`` model transitions (all real while the model buffer is empty).

    :param real_buffer: The SB3 replay buffer of real transitions.
    :param model_buffer: The model-rollout buffer.
    :param real_ratio: Fraction of real transitions in each batch (rounded down to an integer count).
    """

    def __init__(self, real_buffer: ReplayBuffer, model_buffer: ModelReplayBuffer, real_ratio: float) -> None:
        self.real_buffer = real_buffer
        self.model_buffer = model_buffer
        self.real_ratio = real_ratio

    def n_real(self, batch_size: int) -> int:
        """Real transitions in a batch of ``batch_size``: all while the model buffer is empty."""
        if len(self.model_buffer) == 0:
            return batch_size
        return int(self.real_ratio * batch_size)  # rounded down, as in MBPO (12 of 256 at 5%)

    def sample(self, batch_size: int, env: object | None = None) -> ReplayBufferSamples:
        """One batch, drawn as :meth:`sample_many` draws each of its batches."""
        return ReplayBufferSamples(*(t[0] for t in self.sample_many(1, batch_size, env)[:5]))

    def sample_many(self, n_batches: int, batch_size: int, env: object | None = None) -> ReplayBufferSamples:
        """
        ``n_batches`` independent batches drawn like ``sample`` (each with ``n_real`` real transitions first), in one
        go: every tensor has a leading ``n_batches`` axis (``dones`` and ``rewards`` are ``(n_batches, batch_size, 1)``).
        """
        n_real = self.n_real(batch_size)
        n_model = batch_size - n_real
        device = self.model_buffer.device
        real_idx = sample_real_indices(self.real_buffer, n_batches * n_real)
        real = real_transitions(self.real_buffer, device, real_idx)
        model = self.model_buffer.sample(n_batches * n_model) if n_model > 0 else None

        def stack(field: str) -> th.Tensor:
            real_part = getattr(real, field)
            width = real_part.shape[1] if real_part.dim() == 2 else 1
            real_part = real_part.reshape(n_batches, n_real, width)
            if model is None:
                return real_part
            return th.cat([real_part, getattr(model, field).reshape(n_batches, n_model, width)], dim=1)

        # SB3's field order; ``dones`` are the terminals (time-limit truncations bootstrap)
        return ReplayBufferSamples(*map(stack, ("observations", "actions", "next_observations", "terminated", "rewards")))
