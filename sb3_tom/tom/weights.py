"""From dual residuals to importance weights of transitions, and their diagnostics."""

import math
from dataclasses import dataclass

import torch as th

from sb3_tom.tom.dual import KL_RESIDUAL_BOUND


def weight_reference(residuals: th.Tensor, f_divergence: str) -> float:
    """
    The normalising constant of the weights over the replay buffer: the mean raw weight (chi-square), or the
    log of the mean raw weight (KL, kept in log space so that it never overflows).
    """
    if f_divergence == "chi":
        return float(th.relu(residuals + 1).mean())
    e = residuals.clamp(-KL_RESIDUAL_BOUND, KL_RESIDUAL_BOUND)
    return float(th.logsumexp(e, 0) - math.log(e.shape[0]))


def raw_weights(residuals: th.Tensor, f_divergence: str) -> th.Tensor:
    """``w = f*'(e)``: ``relu(e + 1)`` (chi-square) or ``exp(e)`` (KL, with ``e`` clamped)."""
    if f_divergence == "chi":
        return th.relu(residuals + 1)
    return th.exp(residuals.clamp(-KL_RESIDUAL_BOUND, KL_RESIDUAL_BOUND))


def normalized_weights(residuals: th.Tensor, f_divergence: str, reference: float) -> th.Tensor:
    """Weights divided by their buffer mean (``reference`` from :func:`weight_reference`): mean 1 over the buffer."""
    if f_divergence == "chi":
        return th.relu(residuals + 1) / max(reference, 1e-12)
    e = residuals.clamp(-KL_RESIDUAL_BOUND, KL_RESIDUAL_BOUND)
    return th.exp(e - reference)


@dataclass
class WeightStats:
    raw_mean: float
    max: float  # of the normalised weights, before clipping
    ess_fraction: float  # effective sample size / N of the final weights
    clipped_fraction: float
    recent_ratio: float  # mean final weight of the recent window / mean over the buffer


def clip_weights(weights: th.Tensor, clip: float | None) -> th.Tensor:
    return weights if clip is None else weights.clamp(max=clip)


def weight_statistics(
    raw: th.Tensor, normalized: th.Tensor, final: th.Tensor, clip: float | None, recent_mask: th.Tensor
) -> WeightStats:
    total = final.sum()
    ess = float(total**2 / (final.shape[0] * (final**2).sum()).clamp_min(1e-12))
    buffer_mean = float(final.mean())
    recent_mean = float(final[recent_mask].mean()) if bool(recent_mask.any()) else float("nan")
    return WeightStats(
        raw_mean=float(raw.mean()),
        max=float(normalized.max()),
        ess_fraction=ess,
        clipped_fraction=0.0 if clip is None else float((normalized > clip).float().mean()),
        recent_ratio=recent_mean / max(buffer_mean, 1e-12),
    )
