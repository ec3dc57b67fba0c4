"""Clipping of TOM's importance weights and their diagnostics (the weights themselves: ``tom/divergence.py``)."""

import torch as th

from sb3_tom.dynamics.training import effective_sample_size


def clip_weights(weights: th.Tensor, clip: float | None) -> th.Tensor:
    return weights if clip is None else weights.clamp(max=clip)


def weight_statistics(
    raw: th.Tensor, unclipped: th.Tensor, final: th.Tensor, clip: float | None, recent_mask: th.Tensor
) -> dict[str, float]:
    """
    Diagnostics of one round's weights: ``raw`` (``f*'(e)``), ``unclipped`` (normalised, or raw with the official
    resampling scheme) and ``final`` (``unclipped`` clipped at ``clip``: what the model is fit with).

    :return: By their ``tom/`` log names: ``weight_raw_mean``, ``weight_max`` (of ``unclipped``), ``weight_ess_fraction``
        (effective sample size / N of ``final``), ``weight_clipped_fraction`` and ``recent_weight_ratio`` (mean ``final``
        weight of the recent window / mean over the buffer).
    """
    buffer_mean = float(final.mean())
    recent_mean = float(final[recent_mask].mean()) if bool(recent_mask.any()) else float("nan")
    return {
        "weight_raw_mean": float(raw.mean()),
        "weight_max": float(unclipped.max()),
        "weight_ess_fraction": effective_sample_size(final) / final.shape[0],
        "weight_clipped_fraction": 0.0 if clip is None else float((unclipped > clip).float().mean()),
        "recent_weight_ratio": recent_mean / max(buffer_mean, 1e-12),
    }
