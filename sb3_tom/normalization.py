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
    copying the whole. A column (near-)constant on the kept rows gets std 1.

    Computed in float64, two passes over row chunks (exact constants stay exact); rounded to ``inputs``' dtype.
    """
    keep = th.ones(inputs.shape[0], dtype=th.bool, device=inputs.device)
    if exclude is not None:
        keep[exclude] = False
    count = int(keep.sum())
    if count < 2:
        raise ValueError(f"Need at least 2 inputs to standardise them, got {count}.")
    # Sums over the kept rows themselves: subtracting the left-out rows' sums from the whole's would leave rounding
    # residue in a column that is constant on the kept rows only (a std of ~1e-10 instead of 0, so a 1e10 scale)
    chunks = list(zip(inputs.split(tuning.STATISTICS_CHUNK_ROWS), keep.split(tuning.STATISTICS_CHUNK_ROWS), strict=True))
    mean = sum(chunk[kept].double().sum(0) for chunk, kept in chunks) / count
    squares = sum(((chunk[kept].double() - mean) ** 2).sum(0) for chunk, kept in chunks)
    std = (squares / (count - 1)).sqrt()
    std = th.where(std < MIN_STD, th.ones_like(std), std)
    mean_out.copy_(mean.to(inputs.dtype))
    std_out.copy_(std.to(inputs.dtype))
