"""Rollout-length schedule of MBPO: a constant or a linear ramp over epochs."""

from collections.abc import Sequence

RolloutLength = int | Sequence[float]


def validate_rollout_length(rollout_length: RolloutLength) -> None:
    """Raise a ``ValueError`` explaining what is wrong with a rollout-length setting."""
    if isinstance(rollout_length, bool):
        raise ValueError("rollout_length must be an int or [epoch_start, epoch_end, k_min, k_max], not a bool.")
    if isinstance(rollout_length, int):
        if rollout_length < 1:
            raise ValueError(f"rollout_length must be >= 1, got {rollout_length}.")
        return
    if not isinstance(rollout_length, Sequence) or len(rollout_length) != 4:
        raise ValueError(
            f"rollout_length must be an int or a list [epoch_start, epoch_end, k_min, k_max], got {rollout_length!r}."
        )
    epoch_start, epoch_end, k_min, k_max = rollout_length
    if epoch_end <= epoch_start:
        raise ValueError(f"rollout_length schedule needs epoch_end > epoch_start, got {list(rollout_length)}.")
    if k_min < 1 or k_max < 1 or int(k_min) != k_min or int(k_max) != k_max:
        raise ValueError(f"rollout_length schedule needs integer k_min, k_max >= 1, got {list(rollout_length)}.")


def rollout_length_at(rollout_length: RolloutLength, epoch: float) -> int:
    """
    Rollout length for a given epoch.

    :param rollout_length: An int, or ``[epoch_start, epoch_end, k_min, k_max]``: ``k_min`` until ``epoch_start``,
        then a linear ramp to ``k_max`` at ``epoch_end``, constant after.
    :param epoch: Current epoch (env steps / epoch length).
    """
    if isinstance(rollout_length, int):
        return rollout_length
    epoch_start, epoch_end, k_min, k_max = rollout_length
    frac = min(max((epoch - epoch_start) / (epoch_end - epoch_start), 0.0), 1.0)
    return int(k_min + frac * (k_max - k_min))
