"""Optimizer helpers."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch as th


@contextmanager
def fast_adam(optimizers: list[th.optim.Optimizer]) -> Iterator[None]:
    """
    Switch ``Adam``/``AdamW`` optimizers to the fused (all parameters and step counters on CPU) or multi-tensor
    (``foreach``) implementation for the duration of the block, then restore their settings.

    Both compute the same update as the default single-tensor loop (up to float rounding).
    """
    saved: list[tuple[dict[str, Any], Any, Any]] = []
    try:
        for optimizer in optimizers:
            if type(optimizer) not in (th.optim.Adam, th.optim.AdamW):
                continue
            for group in optimizer.param_groups:
                if group.get("fused") or group.get("differentiable") or group.get("capturable"):
                    continue
                params = group["params"]
                on_cpu = all(p.device.type == "cpu" and p.dtype.is_floating_point for p in params) and all(
                    optimizer.state[p]["step"].device.type == "cpu" for p in params if "step" in optimizer.state[p]
                )
                saved.append((group, group.get("fused"), group.get("foreach")))
                if on_cpu:
                    group["fused"], group["foreach"] = True, None
                else:
                    group["fused"], group["foreach"] = None, True
        yield
    finally:
        for group, fused, foreach in saved:
            group["fused"], group["foreach"] = fused, foreach
