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


class AdamKernel:
    """
    Steps an ``Adam``/``AdamW`` optimizer with gradients passed in, calling PyTorch's fused Adam kernel directly.

    ``optimizer.step()`` regroups its tensors by device and dtype and checks its settings on every call, which costs
    more than the update itself for small networks stepped thousands of times. This class does that work once: the
    first :meth:`step` goes through ``optimizer.step()`` (which also creates the optimizer state), later ones call
    ``torch._fused_adam_`` (``_fused_adamw_``) on the lists it kept — the kernel ``optimizer.step()`` itself runs with
    ``fused=True``. Where that kernel does not apply (not CPU float32, ``differentiable``, ``capturable``, a tensor
    learning rate, a missing kernel), every step goes through ``optimizer.step()``.

    Build a new one whenever the optimizer's settings (e.g. its learning rate) may have changed.

    :param optimizer: The optimizer (its state is the one updated; state dicts are unaffected).
    :param params: Its parameters, in the order of the gradients given to :meth:`step`; one parameter group.
    """

    def __init__(self, optimizer: th.optim.Optimizer, params: list[th.Tensor]) -> None:
        self.optimizer = optimizer
        self.params = params
        self._kernel: dict[str, Any] | None = None
        group = optimizer.param_groups[0] if len(optimizer.param_groups) == 1 else None
        kernel_name = "_fused_adamw_" if type(optimizer) is th.optim.AdamW else "_fused_adam_"
        if group is not None and group.get("decoupled_weight_decay") and type(optimizer) is th.optim.Adam:
            kernel_name = "_fused_adamw_"
        self._usable = (
            type(optimizer) in (th.optim.Adam, th.optim.AdamW)
            and group is not None
            and {id(p) for p in group["params"]} == {id(p) for p in params}
            and not group.get("differentiable")
            and not group.get("capturable")
            and not isinstance(group["lr"], th.Tensor)
            and all(p.device.type == "cpu" and p.dtype == th.float32 for p in params)
            and hasattr(th, kernel_name)
        )
        self._kernel_name = kernel_name

    def _prepare(self) -> None:
        group = self.optimizer.param_groups[0]
        states = [self.optimizer.state.get(p, {}) for p in self.params]
        needed = ["step", "exp_avg", "exp_avg_sq"] + (["max_exp_avg_sq"] if group["amsgrad"] else [])
        if not all(all(key in state for key in needed) for state in states):
            return
        steps = [state["step"] for state in states]
        if not all(isinstance(s, th.Tensor) and s.device.type == "cpu" and s.dtype == th.float32 for s in steps):
            return
        beta1, beta2 = group["betas"]
        self._kernel = dict(
            exp_avgs=[state["exp_avg"] for state in states],
            exp_avg_sqs=[state["exp_avg_sq"] for state in states],
            max_exp_avg_sqs=[state["max_exp_avg_sq"] for state in states] if group["amsgrad"] else [],
            state_steps=steps,
            options=dict(
                amsgrad=group["amsgrad"],
                lr=float(group["lr"]),
                beta1=float(beta1),
                beta2=float(beta2),
                weight_decay=float(group["weight_decay"]),
                eps=float(group["eps"]),
                maximize=bool(group["maximize"]),
            ),
        )

    def step(self, grads: list[th.Tensor]) -> None:
        """One Adam step of ``params`` with gradients ``grads`` (same order and shapes)."""
        if self._kernel is None:
            for param, grad in zip(self.params, grads, strict=True):
                param.grad = grad
            with fast_adam([self.optimizer]):
                self.optimizer.step()
            for param in self.params:  # keep no stale gradient attached (nor alive) after the step
                param.grad = None
            if self._usable:
                self._prepare()
            return
        kernel = self._kernel
        th._foreach_add_(kernel["state_steps"], 1)
        getattr(th, self._kernel_name)(
            self.params,
            grads,
            kernel["exp_avgs"],
            kernel["exp_avg_sqs"],
            kernel["max_exp_avg_sqs"],
            kernel["state_steps"],
            **kernel["options"],
        )
