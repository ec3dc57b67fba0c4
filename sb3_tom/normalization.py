"""Input standardisation shared by every network that standardises its inputs (ensemble, discriminator, termination)."""

import torch as th

from sb3_tom import tuning

# A standard deviation below this is a constant input: it is left unscaled (std 1), as MBPO's normaliser does,
# instead of multiplying model noise in that dimension by up to 1/MIN_STD
MIN_STD = 1e-12


def fit_standardization(mean_out: th.Tensor, std_out: th.Tensor, inputs: th.Tensor, exclude: th.Tensor | None = None) -> None:
    """
    Set ``mean_out`` and ``std_out`` (a network's standardisation buffers) in place to the per-column mean and unbiased
    standard deviation of ``inputs`` (``(n, d)``), leaving out the rows ``exclude`` (e.g. a holdout split) without
    copying the rest. A (near-)constant column gets std 1.

    Computed in float64, two passes over row chunks (exact constants stay exact); rounded to ``inputs``' dtype.
    """
    rows = inputs.shape[0]
    if exclude is None:
        exclude = th.zeros(0, dtype=th.long, device=inputs.device)
    left_out = inputs[exclude].double()
    count = rows - left_out.shape[0]
    if count < 2:
        raise ValueError(f"Need at least 2 inputs to standardise them, got {count}.")
    total = th.zeros(inputs.shape[1], dtype=th.float64, device=inputs.device)
    for chunk in inputs.split(tuning.STATISTICS_CHUNK_ROWS):
        total += chunk.double().sum(0)
    mean = (total - left_out.sum(0)) / count
    squares = th.zeros_like(total)
    for chunk in inputs.split(tuning.STATISTICS_CHUNK_ROWS):
        squares += ((chunk.double() - mean) ** 2).sum(0)
    squares -= ((left_out - mean) ** 2).sum(0)
    std = (squares.clamp_min(0.0) / (count - 1)).sqrt()
    std = th.where(std < MIN_STD, th.ones_like(std), std)
    mean_out.copy_(mean.to(inputs.dtype))
    std_out.copy_(std.to(inputs.dtype))
