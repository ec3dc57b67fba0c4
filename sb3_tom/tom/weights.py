"""Clipping of TOM's importance weights and their diagnostics (the weights themselves: ``tom/divergence.py``)."""

from dataclasses import dataclass

import torch as th

from sb3_tom.dynamics.training import effective_sample_size


@dataclass
class WeightStats:
    raw_mean: float
    max: float  # of the weights before clipping
    ess_fraction: float  # effective sample size / N of the final weights (those the model is fit with)
    clipped_fraction: float
    recent_ratio: float  # mean final weight of the recent window / mean over the buffer


def clip_weights(weights: th.Tensor, clip: float | None) -> th.Tensor:
    return weights if clip is None else weights.clamp(max=clip)


def weight_statistics(
    raw: th.Tensor, unclipped: th.Tensor, final: th.Tensor, clip: float | None, recent_mask: th.Tensor
) -> WeightStats:
    """
    Diagnostics of one round's weights: ``raw`` (``f*'(e)``), ``unclipped`` (normalised, or raw with the official
    resampling scheme) and ``final`` (``unclipped`` clipped at ``clip``: what the model is fit with).
    """
    buffer_mean = float(final.mean())
    recent_mean = float(final[recent_mask].mean()) if bool(recent_mask.any()) else float("nan")
    return WeightStats(
        raw_mean=float(raw.mean()),
        max=float(unclipped.max()),
        ess_fraction=effective_sample_size(final) / final.shape[0],
        clipped_fraction=0.0 if clip is None else float((unclipped > clip).float().mean()),
        recent_ratio=recent_mean / max(buffer_mean, 1e-12),
    )
