"""The f-divergences of TOM's dual problem: each one's conjugate term, weight function and weight normaliser."""

import math
from abc import ABC, abstractmethod

import torch as th


class FDivergence(ABC):
    """
    One f-divergence of TOM's dual problem, as the functions of the residuals ``e`` it needs:

    - :meth:`conjugate_mean`, the ``E_D[f*(e)]`` term of the dual loss over a batch;
    - :meth:`weights`, the importance weight ``w = f*'(e)`` of each transition;
    - :meth:`reference` and :meth:`normalized`, the weights divided by their mean over the replay buffer.
    """

    @abstractmethod
    def conjugate_mean(self, e: th.Tensor) -> th.Tensor:
        """``E_D[f*(e)]`` over a batch of residuals ``(batch,)``."""

    @abstractmethod
    def weights(self, e: th.Tensor) -> th.Tensor:
        """The raw importance weights ``w = f*'(e)``."""

    @abstractmethod
    def reference(self, e: th.Tensor) -> float:
        """The normaliser of the weights over the buffer residuals ``e`` (in the form :meth:`normalized` takes)."""

    @abstractmethod
    def normalized(self, e: th.Tensor, reference: float) -> th.Tensor:
        """Weights divided by their buffer mean (``reference`` from :meth:`reference`)."""

    def is_degenerate(self, reference: float) -> bool:
        """Whether a dual solution gives no usable weights (then the round falls back to maximum likelihood)."""
        return not math.isfinite(reference)


class ChiSquare(FDivergence):
    """Chi-square: ``f*(e) = e + e^2 / 2``, ``w = relu(e + 1)``; the reference is the mean weight."""

    def conjugate_mean(self, e: th.Tensor) -> th.Tensor:
        return (0.5 * e**2 + e).mean()

    def weights(self, e: th.Tensor) -> th.Tensor:
        return th.relu(e + 1)

    def reference(self, e: th.Tensor) -> float:
        return float(self.weights(e).mean())

    def normalized(self, e: th.Tensor, reference: float) -> th.Tensor:
        return self.weights(e) / max(reference, 1e-12)

    def is_degenerate(self, reference: float) -> bool:
        return super().is_degenerate(reference) or reference <= 1e-8  # every weight zero


class KullbackLeibler(FDivergence):
    """
    KL: the dual term is ``log E_D[exp(e)]`` (log-sum-exp, which never overflows) and ``w = exp(e)``; the reference is
    the log of the mean weight, so the normalised weights ``exp(e - reference)`` stay finite too. Where ``exp(e)``
    itself overflows float32 (``e`` above about 88.7, where the official code's weights become infinite), the raw
    weight is the largest finite float.
    """

    def conjugate_mean(self, e: th.Tensor) -> th.Tensor:
        return th.logsumexp(e, dim=0) - math.log(e.shape[0])

    def weights(self, e: th.Tensor) -> th.Tensor:
        return _finite_exp(e)

    def reference(self, e: th.Tensor) -> float:
        return float(self.conjugate_mean(e))

    def normalized(self, e: th.Tensor, reference: float) -> th.Tensor:
        return _finite_exp(e - reference)


def _finite_exp(x: th.Tensor) -> th.Tensor:
    """``exp(x)``, with an overflow to infinity replaced by the dtype's largest finite value."""
    return th.exp(x).clamp(max=th.finfo(x.dtype).max)


#: The f-divergences by the name ``MBPO_TOM(f_divergence=...)`` takes.
F_DIVERGENCES: dict[str, FDivergence] = {"chi": ChiSquare(), "kl": KullbackLeibler()}


def get_f_divergence(name: str) -> FDivergence:
    """The f-divergence called ``name``, with an error that lists the others."""
    if name not in F_DIVERGENCES:
        raise ValueError(f"f_divergence must be one of {tuple(F_DIVERGENCES)}, got {name!r}.")
    return F_DIVERGENCES[name]
