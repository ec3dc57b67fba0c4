"""
Dense-layer kernels for hand-differentiated networks: forward, input gradient and weight gradient of ``x W^T + b``.

On CPU, float32 products with at least ``tuning.ONEDNN_MIN_FEATURES`` output features go through oneDNN's matmul
(``torch.ops.mkldnn._linear_pointwise``), which picks its kernels from the CPU's instruction set: on AVX-512 machines
it can run these 256-wide layers faster than the BLAS behind ``torch.mm`` (measured by
``benchmarks/throughput.py``). Both are IEEE float32 matmuls; results agree to float rounding. Everything else
(other devices and dtypes, thin layers such as a critic's 1-unit output) uses the ordinary ``torch`` ops.
``SB3_TOM_ONEDNN=0`` in the environment switches oneDNN off.
"""

import os

import torch as th
from torch.nn import functional as F

from sb3_tom import tuning


def _onednn_available() -> bool:
    if os.environ.get("SB3_TOM_ONEDNN", "1") == "0":
        return False
    try:
        return bool(th.backends.mkldnn.is_available()) and hasattr(th.ops.mkldnn, "_linear_pointwise")
    except (AttributeError, RuntimeError):
        return False


ONEDNN = _onednn_available()


def _use_onednn(x: th.Tensor, weight: th.Tensor) -> bool:
    return (
        ONEDNN
        and x.device.type == "cpu"
        and x.dtype == th.float32
        and weight.dtype == th.float32
        and weight.shape[0] >= tuning.ONEDNN_MIN_FEATURES
        and weight.shape[1] >= tuning.ONEDNN_MIN_FEATURES
        and x.shape[0] >= 16
    )


def _onednn_linear(x: th.Tensor, weight: th.Tensor, bias: th.Tensor | None = None, relu: bool = False) -> th.Tensor:
    return th.ops.mkldnn._linear_pointwise(x, weight, bias, "relu" if relu else "none", [], "")


def linear(x: th.Tensor, weight: th.Tensor, bias: th.Tensor | None = None, relu: bool = False) -> th.Tensor:
    """
    ``x @ weight.T + bias`` (then ReLU if ``relu``), as ``nn.Linear``.

    :param x: ``(batch, in_features)``
    :param weight: ``(out_features, in_features)``; may be a transposed view (see :func:`grad_input`).
    :param bias: ``(out_features,)`` or None.
    """
    if _use_onednn(x, weight):
        return _onednn_linear(x, weight, bias, relu)
    out = F.linear(x, weight, bias)
    return out.relu_() if relu else out


def grad_input(grad_output: th.Tensor, weight: th.Tensor) -> th.Tensor:
    """Gradient of ``linear(x, weight)`` with respect to ``x``: ``grad_output @ weight`` (``(batch, in_features)``)."""
    if weight.shape[0] == 1:  # one output unit: an outer product, cheaper as a broadcast product
        return grad_output * weight
    return linear(grad_output, weight.t())


def grad_weight(grad_output: th.Tensor, x: th.Tensor) -> th.Tensor:
    """
    Gradient of ``linear(x, weight)`` with respect to ``weight``: ``grad_output.T @ x`` (``(out, in)``, contiguous).

    oneDNN reorders a transposed first operand far more slowly than ``Tensor.contiguous`` does, so it gets a contiguous
    copy; for thin products the BLAS is faster with the narrower operand transposed first.
    """
    grad_t = grad_output.t()
    if _use_onednn(grad_t, x.t()):
        return _onednn_linear(grad_t.contiguous(), x.t())
    if x.shape[1] < grad_output.shape[1]:
        return th.mm(x.t(), grad_output).t().contiguous()
    return th.mm(grad_t, x)


def relu_backward(grad_output: th.Tensor, output: th.Tensor) -> th.Tensor:
    """Gradient through a ReLU given its output (``output > 0`` exactly where its input was)."""
    return th.ops.aten.threshold_backward(grad_output, output, 0.0)


def batched_matmul(a: th.Tensor, b: th.Tensor, bias: th.Tensor | None = None, beta: float = 1.0) -> th.Tensor:
    """
    ``beta * bias + a @ b`` over a batch of matrices (``th.baddbmm``; ``th.bmm`` without ``bias``), no autograd.

    The BLAS hands whole matrices of a batch to its threads, so a batch of 7 (an ensemble) on 2 threads runs as 4
    rounds on one thread while the other idles for one. On CPU the batch is therefore computed in two calls: the
    largest part that divides evenly among the threads, then the rest (whose few matrices each use all threads).
    The same products (bit-identical with MKL); the time saved is measured in ``benchmarks/RESULTS.md``.

    :param a: ``(batch, n, k)``
    :param b: ``(batch, k, m)``
    :param bias: ``(batch, 1 or n, m)`` or None.
    """
    batch = a.shape[0]
    threads = th.get_num_threads()
    even = batch - batch % threads
    if a.device.type != "cpu" or threads < 2 or even in (0, batch):
        return th.bmm(a, b) if bias is None else th.baddbmm(bias, a, b, beta=beta)
    out = a.new_empty(batch, a.shape[1], b.shape[2])
    for part in (slice(0, even), slice(even, batch)):
        if bias is None:
            th.bmm(a[part], b[part], out=out[part])
        else:
            th.baddbmm(bias[part], a[part], b[part], beta=beta, out=out[part])
    return out
