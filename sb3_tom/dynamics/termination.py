"""
Termination functions for rollouts of the learned dynamics model.

The model predicts ``next_obs`` but not whether the episode ends, so MBPO needs ``done = f(obs, action, next_obs)``.
For the MuJoCo tasks of Gymnasium (``v4`` / ``v5``, default constructor arguments) the functions below reproduce the
environment's own ``terminated`` check from the observation alone. For unknown environments
:class:`LearnedTermination` learns a classifier from the real transitions instead.

Notes on exactness (see the individual functions):

- Hopper: the real check bounds the *unclipped* joint velocities by 100, while the observation clips them to
  ``[-10, 10]``; velocities over 100 therefore cannot be seen from the observation (random or trained policies do
  not reach them).
- InvertedDoublePendulum: the real check reads the tip height from ``data.site_xpos`` after ``mj_step``; with the
  model's RK4 integrator those positions are the kinematics computed during the last integration stage, not those of
  the final (observed) state, up to about 0.013 apart on random rollouts. The function uses the tip height of the
  observed state, so a transition whose tip height is that close to the threshold can disagree (about 1 in 20000
  random transitions).
"""

import math
import re
from collections.abc import Callable

import numpy as np
import torch as th
from stable_baselines3.common.torch_layers import create_mlp
from torch import nn
from torch.nn import functional as F

from sb3_tom.normalization import fit_standardization

TerminationFn = Callable[[th.Tensor, th.Tensor, th.Tensor], th.Tensor]


def _never_terminal(obs: th.Tensor, action: th.Tensor, next_obs: th.Tensor) -> th.Tensor:
    """
    Termination function of the tasks without a terminal state (HalfCheetah, Swimmer, Reacher, Pusher,
    HumanoidStandup, Pendulum).

    :param obs: Observations, shape ``(batch, obs_dim)``.
    :param action: Actions, shape ``(batch, action_dim)``.
    :param next_obs: Next observations, shape ``(batch, obs_dim)``.
    :return: All-False boolean tensor of shape ``(batch,)``.
    """
    return th.zeros(next_obs.shape[:-1], dtype=th.bool, device=next_obs.device)


def hopper_termination(obs: th.Tensor, action: th.Tensor, next_obs: th.Tensor) -> th.Tensor:
    """
    Hopper (v2 to v5): unhealthy when an element of ``qpos[2:]`` and ``qvel`` (``next_obs[1:]``) leaves the open
    interval ``(-100, 100)``, when the height ``next_obs[0]`` leaves ``(0.7, inf)`` or when the torso angle
    ``next_obs[1]`` leaves ``(-0.2, 0.2)``. Non-finite values are therefore terminal.

    The observation clips the velocities to ``[-10, 10]``, so the (unreachable in practice) case of a velocity over
    100 in absolute value cannot be detected.

    :param obs: Observations, shape ``(batch, obs_dim)``.
    :param action: Actions, shape ``(batch, action_dim)``.
    :param next_obs: Next observations, shape ``(batch, obs_dim)``.
    :return: Boolean tensor of shape ``(batch,)``, True where terminal.
    """
    height, angle, state = next_obs[..., 0], next_obs[..., 1], next_obs[..., 1:]
    healthy_state = ((state > -100.0) & (state < 100.0)).all(dim=-1)
    healthy_z = (height > 0.7) & (height < math.inf)
    healthy_angle = (angle > -0.2) & (angle < 0.2)
    return ~(healthy_state & healthy_z & healthy_angle & th.isfinite(next_obs).all(dim=-1))


def walker2d_termination(obs: th.Tensor, action: th.Tensor, next_obs: th.Tensor) -> th.Tensor:
    """
    Walker2d (v2 to v5): unhealthy when the height ``next_obs[0]`` leaves the open interval ``(0.8, 2.0)`` or the
    torso angle ``next_obs[1]`` leaves ``(-1, 1)``. As in the environment, only those two values are checked (a NaN
    in them is terminal since the comparisons fail).

    :param obs: Observations, shape ``(batch, obs_dim)``.
    :param action: Actions, shape ``(batch, action_dim)``.
    :param next_obs: Next observations, shape ``(batch, obs_dim)``.
    :return: Boolean tensor of shape ``(batch,)``, True where terminal.
    """
    height, angle = next_obs[..., 0], next_obs[..., 1]
    healthy = (height > 0.8) & (height < 2.0) & (angle > -1.0) & (angle < 1.0)
    return ~healthy


def ant_termination(obs: th.Tensor, action: th.Tensor, next_obs: th.Tensor) -> th.Tensor:
    """
    Ant (v2 to v5): unhealthy when the state is not finite or the torso height ``next_obs[0]`` leaves the closed
    interval ``[0.2, 1.0]``. Works with and without contact forces in the observation (v5 includes them by default,
    v4 does not); a non-finite value anywhere in ``next_obs`` is terminal.

    :param obs: Observations, shape ``(batch, obs_dim)``.
    :param action: Actions, shape ``(batch, action_dim)``.
    :param next_obs: Next observations, shape ``(batch, obs_dim)``.
    :return: Boolean tensor of shape ``(batch,)``, True where terminal.
    """
    height = next_obs[..., 0]
    healthy = th.isfinite(next_obs).all(dim=-1) & (height >= 0.2) & (height <= 1.0)
    return ~healthy


def humanoid_termination(obs: th.Tensor, action: th.Tensor, next_obs: th.Tensor) -> th.Tensor:
    """
    Humanoid (v3 to v5): unhealthy when the torso height ``next_obs[0]`` leaves the open interval ``(1.0, 2.0)``
    (so a height of exactly 1.0 or 2.0, or NaN, is terminal).

    :param obs: Observations, shape ``(batch, obs_dim)``.
    :param action: Actions, shape ``(batch, action_dim)``.
    :param next_obs: Next observations, shape ``(batch, obs_dim)``.
    :return: Boolean tensor of shape ``(batch,)``, True where terminal.
    """
    height = next_obs[..., 0]
    return ~((height > 1.0) & (height < 2.0))


def inverted_pendulum_termination(obs: th.Tensor, action: th.Tensor, next_obs: th.Tensor) -> th.Tensor:
    """
    InvertedPendulum (v2 to v5): terminal when the observation is not finite or the pole angle ``next_obs[1]`` is
    larger than 0.2 in absolute value.

    :param obs: Observations, shape ``(batch, obs_dim)``.
    :param action: Actions, shape ``(batch, action_dim)``.
    :param next_obs: Next observations, shape ``(batch, obs_dim)``.
    :return: Boolean tensor of shape ``(batch,)``, True where terminal.
    """
    return ~th.isfinite(next_obs).all(dim=-1) | (next_obs[..., 1].abs() > 0.2)


# Pole lengths of inverted_double_pendulum.xml: the second pole is attached 0.6 above the first hinge and the
# "tip" site is 0.6 above the second hinge; the cart (and first hinge) is at height 0.
_IDP_POLE_LENGTH = 0.6


def inverted_double_pendulum_termination(obs: th.Tensor, action: th.Tensor, next_obs: th.Tensor) -> th.Tensor:
    """
    InvertedDoublePendulum (v2 to v5): terminal when the height ``y`` of the tip of the second pole is at most 1.

    The observation starts with ``[x, sin(q1), sin(q2), cos(q1), cos(q2)]`` (hinge angles ``q1``, ``q2``) in both
    v4 and v5, so ``y = 0.6 cos(q1) + 0.6 cos(q1 + q2)`` with ``cos(q1 + q2) = cos q1 cos q2 - sin q1 sin q2``.

    The environment reads ``y`` from ``data.site_xpos`` after ``mj_step``, which with the RK4 integrator holds the
    kinematics of the last integration stage rather than of the final state; the two heights differ by at most about
    0.013 on random rollouts, so the decision can differ from the environment's when ``y`` is that close to 1. A NaN
    height is not terminal, as in the environment.

    :param obs: Observations, shape ``(batch, obs_dim)``.
    :param action: Actions, shape ``(batch, action_dim)``.
    :param next_obs: Next observations, shape ``(batch, obs_dim)``.
    :return: Boolean tensor of shape ``(batch,)``, True where terminal.
    """
    sin1, sin2, cos1, cos2 = next_obs[..., 1], next_obs[..., 2], next_obs[..., 3], next_obs[..., 4]
    tip_height = _IDP_POLE_LENGTH * cos1 + _IDP_POLE_LENGTH * (cos1 * cos2 - sin1 * sin2)
    return tip_height <= 1.0


# Keyed by the lower-cased environment name without namespace and version.
_TERMINATION_FNS: dict[str, TerminationFn] = {
    "hopper": hopper_termination,
    "walker2d": walker2d_termination,
    "ant": ant_termination,
    "humanoid": humanoid_termination,
    "invertedpendulum": inverted_pendulum_termination,
    "inverteddoublependulum": inverted_double_pendulum_termination,
    # the tasks without a terminal state
    **dict.fromkeys(("halfcheetah", "swimmer", "reacher", "pusher", "humanoidstandup", "pendulum"), _never_terminal),
}


def env_base_name(env_id: str) -> str:
    """
    Name of an environment without module prefix, namespace and version, e.g. ``"Hopper"`` for ``"Hopper-v5"``,
    ``"gymnasium/Hopper-v4"`` or ``"my_module:Hopper-v4"``.

    :param env_id: Gymnasium environment id.
    :return: The base name.
    """
    name = env_id.strip().rsplit(":", 1)[-1].rsplit("/", 1)[-1]
    return re.sub(r"(?<=.)-v\d+$", "", name)  # a version suffix after a non-empty name


def get_termination_fn(env_id: str) -> TerminationFn | None:
    """
    Termination function of a known environment, matched on the base name of the id (any version, namespace or
    module prefix), assuming the default observation layout of Gymnasium's v4 / v5 environments.

    :param env_id: Gymnasium environment id, e.g. ``"Hopper-v4"``.
    :return: A vectorised ``(obs, action, next_obs) -> terminated`` function returning a boolean tensor of shape
        ``(batch,)``, or None when the environment is unknown (use :class:`LearnedTermination` then).
    """
    return _TERMINATION_FNS.get(env_base_name(env_id).lower())


TensorLike = th.Tensor | np.ndarray


class LearnedTermination(nn.Module):
    """
    Terminal-state classifier for environments without a known termination function.

    A small MLP on the standardised ``next_obs`` predicts the probability of termination, trained with a
    class-balanced binary cross-entropy (each minibatch holds as many terminal as non-terminal transitions, since
    terminals are rare). Until a terminal transition has been seen in the data given to :meth:`fit`, nothing is
    predicted to be terminal. Once one has been seen, a non-finite ``next_obs`` is terminal as well.

    The threshold is that of the balanced classes (logit 0), not corrected for how rare terminals are, so its errors
    lean towards predicting a terminal: a false terminal only stops a model rollout early, while a missed one lets
    the rollout and SAC's target run on through a fall. On random Hopper-v4 and Walker2d-v4 transitions (4.5-4.7%
    terminal) a fit of 200 steps from scratch predicted 8.9-9.9% terminal and missed 0.8-2.8% of the true terminals;
    at the prior's threshold the same network missed 31-49% of them. The classifier is kept from round to round, so
    its false terminals fall as it trains (a fit of 3,000 steps: 5.0-5.6% predicted, 0-1.2% missed;
    ``benchmarks/termination_accuracy.py``).

    The standardisation statistics are recomputed from the data of each :meth:`fit` call (meant to be the whole
    replay buffer); a dimension that is constant there is left unscaled (std 1), so that model noise in it is not
    amplified. They are buffers saved with the state dict, like ``has_seen_terminal``.

    :param obs_dim: Observation size.
    :param action_dim: Action size (unused by the classifier, kept for a uniform interface).
    :param hidden_size: Width of the two hidden layers.
    :param device: Device of the module.
    :param learning_rate: Adam learning rate.
    """

    obs_mean: th.Tensor
    obs_std: th.Tensor
    _seen_terminal: th.Tensor

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        hidden_size: int = 64,
        device: th.device | str = "cpu",
        learning_rate: float = 1e-3,
    ) -> None:
        super().__init__()
        self.obs_dim = obs_dim
        self.action_dim = action_dim
        self.net = nn.Sequential(*create_mlp(obs_dim, 1, [hidden_size, hidden_size], nn.SiLU))
        self.register_buffer("obs_mean", th.zeros(obs_dim))
        self.register_buffer("obs_std", th.ones(obs_dim))
        self.register_buffer("_seen_terminal", th.tensor(0))  # 0/1 (integer, as SB3 keeps its saved tensors)
        self.to(device)
        self.optimizer = th.optim.Adam(self.net.parameters(), lr=learning_rate)

    @property
    def device(self) -> th.device:
        """Device of the module's parameters."""
        return self.obs_mean.device

    @property
    def has_seen_terminal(self) -> bool:
        """Whether :meth:`fit` was given at least one terminal transition (before that, nothing is terminal)."""
        return bool(self._seen_terminal.item())

    def _as_tensor(self, x: TensorLike) -> th.Tensor:
        # clone() also turns tensors created under inference mode into ordinary tensors usable by autograd
        return th.as_tensor(x, device=self.device).float().clone()

    def logits(self, next_obs: th.Tensor) -> th.Tensor:
        """
        :param next_obs: Next observations, shape ``(batch, obs_dim)``, on the module's device.
        :return: Termination logits, shape ``(batch,)``.
        """
        normalized = (next_obs - self.obs_mean) / self.obs_std
        return self.net(th.nan_to_num(normalized)).squeeze(-1)

    def forward(self, obs: th.Tensor, actions: th.Tensor, next_obs: th.Tensor) -> th.Tensor:
        """
        :param obs: Observations, shape ``(batch, obs_dim)``.
        :param actions: Actions, shape ``(batch, action_dim)``.
        :param next_obs: Next observations, shape ``(batch, obs_dim)``.
        :return: Boolean tensor of shape ``(batch,)`` on the device of ``next_obs``, True where the probability of
            termination is over 0.5 (all False while no terminal has been seen).
        """
        if not self.has_seen_terminal:
            return th.zeros(next_obs.shape[:-1], dtype=th.bool, device=next_obs.device)
        x = next_obs.to(device=self.device, dtype=th.float32)
        terminal = (self.logits(x) > 0) | ~th.isfinite(x).all(dim=-1)
        return terminal.to(next_obs.device)

    def fit(
        self,
        obs: TensorLike,
        actions: TensorLike,
        next_obs: TensorLike,
        terminated: TensorLike,
        n_steps: int = 200,
        batch_size: int = 256,
    ) -> dict[str, float]:
        """
        Train the classifier on real transitions; does nothing when they contain no terminal.

        :param obs: Observations, shape ``(n, obs_dim)``.
        :param actions: Actions, shape ``(n, action_dim)``.
        :param next_obs: Next observations, shape ``(n, obs_dim)``.
        :param terminated: Terminal flags (bool or 0/1), shape ``(n,)`` or ``(n, 1)``; truncations must not be
            counted as terminal.
        :param n_steps: Number of gradient steps.
        :param batch_size: Minibatch size (half terminal, half non-terminal transitions).
        :return: Metrics on the given data after training: ``loss`` (class-balanced, NaN if nothing was trained),
            ``accuracy``, ``balanced_accuracy`` and ``terminal_fraction``.
        """
        with th.inference_mode(False), th.enable_grad():
            x = self._as_tensor(next_obs).reshape(-1, self.obs_dim)
            y = self._as_tensor(terminated).reshape(-1) > 0.5
            if x.shape[0] != y.shape[0]:
                raise ValueError(f"{x.shape[0]} next observations but {y.shape[0]} terminal flags")
            finite = th.isfinite(x).all(dim=-1)
            x, y = x[finite], y[finite]
            n_terminal = int(y.sum())
            n_total = y.shape[0]
            if n_terminal == 0:
                return {"loss": math.nan, **self._metrics(x, y)}

            if n_total >= 2:
                fit_standardization(self.obs_mean, self.obs_std, x)
            self._seen_terminal.fill_(1)

            positives, negatives = th.nonzero(y).squeeze(-1), th.nonzero(~y).squeeze(-1)
            half_batch = max(batch_size // 2, 1)
            self.train()
            for _ in range(n_steps):
                batch_pos = positives[th.randint(len(positives), (half_batch,), device=self.device)]
                terms = [F.binary_cross_entropy_with_logits(self.logits(x[batch_pos]), y.new_ones(half_batch).float())]
                if len(negatives) > 0:
                    batch_neg = negatives[th.randint(len(negatives), (half_batch,), device=self.device)]
                    terms.append(
                        F.binary_cross_entropy_with_logits(self.logits(x[batch_neg]), y.new_zeros(half_batch).float())
                    )
                loss = th.stack(terms).mean()
                self.optimizer.zero_grad()
                loss.backward()
                self.optimizer.step()
            self.eval()

            with th.no_grad():
                logits = self.logits(x)
                per_sample = F.binary_cross_entropy_with_logits(logits, y.float(), reduction="none")
                class_losses = [per_sample[y].mean()] + ([per_sample[~y].mean()] if n_terminal < n_total else [])
                balanced_loss = float(th.stack(class_losses).mean())
        return {"loss": balanced_loss, **self._metrics(x, y)}

    @th.no_grad()
    def _metrics(self, next_obs: th.Tensor, terminated: th.Tensor) -> dict[str, float]:
        """
        :param next_obs: Finite next observations on the module's device.
        :param terminated: Boolean terminal flags.
        :return: ``accuracy``, ``balanced_accuracy`` (mean of the per-class recalls) and ``terminal_fraction`` (each
            NaN for empty data).
        """
        predicted = self(next_obs, next_obs, next_obs)  # obs and actions are unused
        return {
            "accuracy": float((predicted == terminated).float().mean()),
            "balanced_accuracy": balanced_accuracy(predicted, terminated),
            "terminal_fraction": float(terminated.float().mean()),
        }

    def extra_repr(self) -> str:
        """Sizes shown by ``repr``."""
        return f"obs_dim={self.obs_dim}, action_dim={self.action_dim}"


def balanced_accuracy(predicted: th.Tensor, target: th.Tensor) -> float:
    """
    Mean of the recall on terminal and on non-terminal samples (classes absent from ``target`` are skipped).

    :param predicted: Boolean predictions.
    :param target: Boolean labels of the same shape.
    :return: The balanced accuracy (NaN when ``target`` is empty).
    """
    predicted, target = predicted.reshape(-1).bool(), target.reshape(-1).bool()
    recalls = [float((predicted[mask] == target[mask]).float().mean()) for mask in (target, ~target) if mask.any()]
    return float(np.mean(recalls)) if recalls else math.nan
