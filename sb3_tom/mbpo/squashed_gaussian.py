"""SAC's tanh-squashed diagonal Gaussian policy sample and its log-probability, as SB3 computes them."""

import math
from typing import NamedTuple

import torch as th
from stable_baselines3.sac.policies import LOG_STD_MAX, LOG_STD_MIN

_LOG_SQRT_2PI = math.log(math.sqrt(2 * math.pi))


class SquashedSample(NamedTuple):
    actions: th.Tensor  # tanh of the Gaussian sample, (batch, action_dim)
    log_prob: th.Tensor  # (batch,)
    eps: th.Tensor  # the standard-normal draw
    std: th.Tensor


def squashed_gaussian_sample(mean: th.Tensor, raw_log_std: th.Tensor, epsilon: float) -> SquashedSample:
    """
    Reparameterised sample ``tanh(mean + eps * std)`` and its log-probability, with the operations of SB3's
    ``SquashedDiagGaussianDistribution`` (log-std clamped to SB3's range, ``eps`` drawn like ``Normal.rsample``, the
    Gaussian log-density, the tanh correction with ``epsilon``), without building a ``torch.distributions.Normal``.
    Differentiable (autograd flows through it) or usable under ``no_grad``.

    :param mean: Gaussian mean ``(batch, action_dim)``.
    :param raw_log_std: Log-std before clamping ``(batch, action_dim)``.
    :param epsilon: SB3's ``action_dist.epsilon``.
    """
    std = raw_log_std.clamp(LOG_STD_MIN, LOG_STD_MAX).exp()
    eps = th.empty_like(mean).normal_()
    gaussian_actions = mean + eps * std
    log_prob = (-((gaussian_actions - mean) ** 2) / (2 * std**2) - std.log() - _LOG_SQRT_2PI).sum(dim=1)
    actions = th.tanh(gaussian_actions)
    log_prob = log_prob - th.log(1 - actions**2 + epsilon).sum(dim=1)
    return SquashedSample(actions, log_prob, eps, std)
