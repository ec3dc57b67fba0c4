"""
The fast CPU kernels, and every private PyTorch API the package uses, in one place.

The maths of every network and loss is written once, with autograd, in the module that owns it. What makes it fast on
a CPU comes from here, through ordinary differentiable functions:

* :func:`linear`, the dense layers of the SAC networks and of the dual: a :class:`torch.autograd.Function` whose
  forward and backward products go, where it pays (:func:`onednn_default`: AVX-512 CPUs other than Intel's),
  through oneDNN's float32 matmul (``torch.ops.mkldnn._linear_pointwise``, for products with at least
  ``tuning.ONEDNN_MIN_FEATURES`` features), which runs these 256-wide layers up to twice as fast as the BLAS behind
  ``torch.mm`` there; elsewhere the BLAS is faster, and is used;
* :func:`batched_linear`, the ensemble's layers: without autograd (rollouts), split so that every thread gets the
  same number of matrices (:func:`batched_matmul`);
* :class:`AdamKernel`: Adam's fused CPU kernel (``torch._fused_adam_``) called directly on kept lists of tensors,
  which at these sizes costs a fraction of ``optimizer.step()``;
* :func:`polyak_update`: the target-network update as two multi-tensor ops (``torch._foreach_*``);
* :func:`relu_backward`: the gradient through a ReLU as autograd computes it (``aten::threshold_backward``), one
  float kernel where the public mask product compares, converts a bool mask and multiplies.

Each private API sits behind a capability probe; where it is missing (another PyTorch version, another device), the
public op computes the same thing. ``SB3_TOM_FAST_KERNELS=0`` in the environment (or :func:`set_fast_kernels`)
switches all of them off together, and with them the one written-out gradient the package keeps (SAC's update of
:mod:`sb3_tom.mbpo.mlp_sac`, see :func:`fast_kernels`): everything then runs on public PyTorch ops and autograd.
``SB3_TOM_ONEDNN=0`` switches off only the oneDNN matmuls, ``SB3_TOM_ONEDNN=1`` uses them on any CPU (unset or
``auto``: :func:`onednn_default`).
"""

import os
import platform
from pathlib import Path
from typing import Any

import torch as th
from torch.nn import functional as F

from sb3_tom import tuning


def cpu_vendor(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's vendor, ``GenuineIntel`` or ``AuthenticAMD``, or ``""`` for another or where it cannot be read."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:  # no /proc (Windows: "Intel64 Family 6 Model 85 Stepping 7, GenuineIntel")
        text = platform.processor()
    return next((name for name in ("GenuineIntel", "AuthenticAMD") if name in text), "")


def onednn_default(capability: str, vendor: str, setting: str | None) -> bool:
    """
    Whether the dense layers' matmuls go through oneDNN rather than the BLAS (MKL) on this CPU.

    Measured with SAC's written-out step (``benchmarks/hot_loops.py --loops sac``, ``benchmarks/RESULTS.md``): on an
    AMD EPYC with AVX-512 oneDNN is 1.40x faster than MKL, on an AVX2-only AMD EPYC MKL is (13.8 against 18.2 ms),
    and on an Intel Xeon with AVX-512 MKL is too (4.63 against 6.36 ms on 2 threads, 6.75 against 7.88 on one), as
    MKL runs its best kernels on Intel's CPUs. So the default is oneDNN on AVX-512 CPUs that are not Intel's.

    :param capability: ``torch.backends.cpu.get_cpu_capability()`` (``"AVX512"``, ``"AVX2"``, ...).
    :param vendor: :func:`cpu_vendor` (``""`` if unknown: then the AVX-512 rule alone decides).
    :param setting: ``SB3_TOM_ONEDNN``: ``"1"`` (always, where the op exists), ``"0"`` (never), ``None`` or
        ``"auto"`` (this rule).
    """
    if setting in ("0", "1"):
        return setting == "1"
    if setting not in (None, "", "auto"):
        raise ValueError(f"SB3_TOM_ONEDNN={setting!r}: use 1 (oneDNN matmuls on), 0 (off) or auto (by CPU, the default)")
    return "AVX512" in capability and vendor != "GenuineIntel"


def _probe_onednn() -> bool:
    """Whether this PyTorch build has oneDNN's float32 linear op (a private API) and it computes ``x @ w.T``."""
    try:
        if not (th.backends.mkldnn.is_available() and hasattr(th.ops.mkldnn, "_linear_pointwise")):
            return False
        x, w = th.ones(16, 64), th.ones(64, 64)
        return bool(th.allclose(th.ops.mkldnn._linear_pointwise(x, w, None, "none", [], ""), x @ w.t()))
    except (AttributeError, RuntimeError):
        return False


def _probe_threshold_backward() -> bool:
    try:
        grad, output = th.tensor([1.0, 2.0, 3.0]), th.tensor([0.0, 0.5, 0.0])
        return bool(th.equal(th.ops.aten.threshold_backward(grad, output, 0), th.tensor([0.0, 2.0, 0.0])))
    except (AttributeError, RuntimeError):
        return False


#: What this PyTorch build offers (probed once, at import).
AVAILABLE = {
    "onednn": _probe_onednn(),
    "fused_adam": all(hasattr(th, name) for name in ("_fused_adam_", "_fused_adamw_", "_foreach_add_")),
    "foreach": all(hasattr(th, name) for name in ("_foreach_mul_", "_foreach_add_")),
    "threshold_backward": _probe_threshold_backward(),
}
_enabled = {
    "fast": os.environ.get("SB3_TOM_FAST_KERNELS", "1") != "0",
    "onednn": onednn_default(th.backends.cpu.get_cpu_capability(), cpu_vendor(), os.environ.get("SB3_TOM_ONEDNN")),
}


def set_fast_kernels(enabled: bool, onednn: bool | None = None) -> None:
    """
    Switch the fast kernels (and the written-out SAC gradient) on or off for this process; see the module doc.

    :param onednn: Also switch the oneDNN matmuls alone (None: leave as they are).
    """
    _enabled["fast"] = bool(enabled)
    if onednn is not None:
        _enabled["onednn"] = bool(onednn)


def onednn_enabled() -> bool:
    """Whether the oneDNN matmuls are chosen (:func:`onednn_default`); they run only with the fast kernels on."""
    return _enabled["onednn"]


def fast_kernels() -> bool:
    """Whether the fast kernels and the written-out SAC gradient are on (``SB3_TOM_FAST_KERNELS`` not ``0``)."""
    return _enabled["fast"]


def _use_onednn(x: th.Tensor, weight: th.Tensor) -> bool:
    return (
        _enabled["fast"]
        and _enabled["onednn"]
        and AVAILABLE["onednn"]
        and x.device.type == "cpu"
        and x.dtype == th.float32
        and weight.dtype == th.float32
        and min(weight.shape) >= tuning.ONEDNN_MIN_FEATURES
        and x.shape[0] >= 16
    )


def _matmul_t(x: th.Tensor, weight: th.Tensor, bias: th.Tensor | None = None) -> th.Tensor:
    """``x @ weight.T + bias`` through oneDNN where it applies, else ``F.linear``."""
    if _use_onednn(x, weight):
        return th.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    return F.linear(x, weight, bias)


def grad_input(grad_output: th.Tensor, weight: th.Tensor) -> th.Tensor:
    """Gradient of ``x @ weight.T`` with respect to ``x``: ``grad_output @ weight`` (``(batch, in_features)``)."""
    if weight.shape[0] == 1:  # one output unit: an outer product, cheaper as a broadcast product
        return grad_output * weight
    return _matmul_t(grad_output, weight.t())


def grad_weight(grad_output: th.Tensor, x: th.Tensor) -> th.Tensor:
    """
    Gradient of ``x @ weight.T`` with respect to ``weight``: ``grad_output.T @ x`` (``(out, in)``, contiguous).

    oneDNN reorders a transposed first operand far more slowly than ``Tensor.contiguous`` does, so it gets a contiguous
    copy; for thin products the BLAS is faster with the narrower operand transposed first.
    """
    grad_t = grad_output.t()
    if _use_onednn(grad_t, x.t()):
        return _matmul_t(grad_t.contiguous(), x.t())
    if x.shape[1] < grad_output.shape[1]:
        return th.mm(x.t(), grad_output).t().contiguous()
    return th.mm(grad_t, x)


def relu_backward(grad_output: th.Tensor, output: th.Tensor) -> th.Tensor:
    """
    Gradient through a ReLU given its output (``output > 0`` exactly where its input was).

    With the fast kernels on it is autograd's own ReLU gradient (``aten::threshold_backward``), one float kernel,
    in place of the mask product (a comparison to bool, then a mixed-type product: slow on AVX2 CPUs), which computes
    the same values: SAC's written-out step is 1.08-1.15x faster with it on an AVX2 CPU (``benchmarks/hot_loops.py``).
    """
    if _enabled["fast"] and AVAILABLE["threshold_backward"]:
        return th.ops.aten.threshold_backward(grad_output, output, 0)
    return grad_output * (output > 0)


class _Linear(th.autograd.Function):
    @staticmethod
    def forward(x: th.Tensor, weight: th.Tensor, bias: th.Tensor | None, relu: bool) -> th.Tensor:
        out = _matmul_t(x, weight, bias)
        return out.relu_() if relu else out

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: th.Tensor) -> None:
        x, weight, bias, relu = inputs
        ctx.relu, ctx.has_bias = relu, bias is not None
        ctx.save_for_backward(x, weight, output if relu else None)

    @staticmethod
    def backward(ctx: Any, grad: th.Tensor) -> tuple[th.Tensor | None, ...]:
        x, weight, output = ctx.saved_tensors
        if ctx.relu:
            grad = relu_backward(grad, output)
        grad_x = grad_input(grad, weight) if ctx.needs_input_grad[0] else None
        grad_w = grad_weight(grad, x) if ctx.needs_input_grad[1] else None
        grad_b = grad.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b, None


def linear(x: th.Tensor, weight: th.Tensor, bias: th.Tensor | None = None, relu: bool = False) -> th.Tensor:
    """
    ``x @ weight.T + bias`` (then ReLU if ``relu``), as ``nn.Linear``; differentiable, over the fast kernels.

    :param x: ``(batch, in_features)``
    :param weight: ``(out_features, in_features)``; may be a transposed view.
    :param bias: ``(out_features,)`` or None.
    """
    if th.is_grad_enabled() and (x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)):
        return _Linear.apply(x, weight, bias, relu)
    return _Linear.forward(x, weight, bias, relu)


def batched_matmul(a: th.Tensor, b: th.Tensor, bias: th.Tensor | None = None) -> th.Tensor:
    """
    ``bias + a @ b`` over a batch of matrices (``th.baddbmm``; ``th.bmm`` without ``bias``), no autograd.

    The BLAS hands whole matrices of a batch to its threads, so a batch of 7 (an ensemble) on 2 threads runs as 4
    rounds on one thread while the other idles for one. With the fast kernels on, a CPU batch is therefore computed in
    two calls: the largest part that divides evenly among the threads, then the rest (whose few matrices each use all
    threads). The same products (bit-identical with MKL); the time saved is measured in ``benchmarks/RESULTS.md``.

    :param a: ``(batch, n, k)``
    :param b: ``(batch, k, m)``
    :param bias: ``(batch, 1 or n, m)`` or None.
    """
    batch = a.shape[0]
    threads = th.get_num_threads()
    even = batch - batch % threads
    if not _enabled["fast"] or a.device.type != "cpu" or threads < 2 or even in (0, batch):
        return th.bmm(a, b) if bias is None else th.baddbmm(bias, a, b)
    out = a.new_empty(batch, a.shape[1], b.shape[2])
    for part in (slice(0, even), slice(even, batch)):
        if bias is None:
            th.bmm(a[part], b[part], out=out[part])
        else:
            th.baddbmm(bias[part], a[part], b[part], out=out[part])
    return out


def batched_linear(x: th.Tensor, weight: th.Tensor, bias: th.Tensor) -> th.Tensor:
    """
    ``bias + x @ weight`` per batch element (an ensemble layer), differentiable.

    Under autograd it is ``th.baddbmm`` (the thread-balanced split of :func:`batched_matmul` did not pay inside a
    training step: 35.2 against 33.6 ms per ensemble step on an AVX2 CPU, ``benchmarks/hot_loops.py``); without
    autograd (rollouts, holdout evaluation) it is :func:`batched_matmul`.

    :param x: ``(batch, n, in_features)``
    :param weight: ``(batch, in_features, out_features)``
    :param bias: ``(batch, 1, out_features)``
    """
    if th.is_grad_enabled() and (x.requires_grad or weight.requires_grad or bias.requires_grad):
        return th.baddbmm(bias, x, weight)
    return batched_matmul(x, weight, bias)


def fused_adam_usable(params: list[th.Tensor]) -> bool:
    """Whether :class:`AdamKernel` can use the fused Adam kernel on ``params`` (fast kernels on, probe passed, CPU float32)."""
    return (
        _enabled["fast"] and AVAILABLE["fused_adam"] and all(p.device.type == "cpu" and p.dtype == th.float32 for p in params)
    )


def polyak_update(targets: list[th.Tensor], sources: list[th.Tensor], tau: float) -> None:
    """``target = (1 - tau) * target + tau * source`` in place, as SB3's ``polyak_update`` (``mul_`` then ``add_``)."""
    with th.no_grad():
        if _enabled["fast"] and AVAILABLE["foreach"]:  # two multi-tensor ops instead of two per tensor
            th._foreach_mul_(targets, 1 - tau)
            th._foreach_add_(targets, sources, alpha=tau)
        else:
            for target, source in zip(targets, sources, strict=True):
                target.mul_(1 - tau).add_(source, alpha=tau)


class AdamKernel:
    """
    Steps an ``Adam``/``AdamW`` optimizer with gradients passed in, calling PyTorch's fused Adam kernel directly.

    ``optimizer.step()`` regroups its tensors by device and dtype and checks its settings on every call, which costs
    more than the update itself for small networks stepped thousands of times. This class does that work once: the
    first :meth:`step` goes through ``optimizer.step()`` (which also creates the optimizer state), later ones call
    the fused kernel (``torch._fused_adam_``, ``_fused_adamw_`` for AdamW) on the lists it kept, the kernel
    ``optimizer.step()`` itself runs with ``fused=True``. Where that kernel does not apply (not CPU float32,
    ``differentiable``, ``capturable``, a tensor learning rate, a missing kernel), every step goes through
    ``optimizer.step()``.

    Build a new one whenever the optimizer's settings (e.g. its learning rate) may have changed.

    :param optimizer: The optimizer (its state is the one updated; state dicts are unaffected).
    :param params: Its parameters, in the order of the gradients given to :meth:`step`; one parameter group.
    """

    def __init__(self, optimizer: th.optim.Optimizer, params: list[th.Tensor]) -> None:
        self.optimizer = optimizer
        self.params = params
        self._kernel: dict[str, Any] | None = None
        group = optimizer.param_groups[0] if len(optimizer.param_groups) == 1 else None
        self._usable = (
            type(optimizer) in (th.optim.Adam, th.optim.AdamW)
            and group is not None
            and {id(p) for p in group["params"]} == {id(p) for p in params}
            and not group.get("differentiable")
            and not group.get("capturable")
            and not isinstance(group["lr"], th.Tensor)
            and fused_adam_usable(params)
        )
        self._decoupled = type(optimizer) is th.optim.AdamW or bool(group and group.get("decoupled_weight_decay"))

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
            self.optimizer.step()
            for param in self.params:  # keep no stale gradient attached (nor alive) after the step
                param.grad = None
            if self._usable:
                self._prepare()
            return
        kernel = self._kernel
        th._foreach_add_(kernel["state_steps"], 1.0)
        fused_adam = th._fused_adamw_ if self._decoupled else th._fused_adam_
        fused_adam(
            self.params,
            grads,
            kernel["exp_avgs"],
            kernel["exp_avg_sqs"],
            kernel["max_exp_avg_sqs"],
            kernel["state_steps"],
            **kernel["options"],
        )
