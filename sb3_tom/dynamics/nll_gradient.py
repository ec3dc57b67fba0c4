"""
The training loss of a :class:`~sb3_tom.dynamics.ensemble.GaussianEnsemble` and its gradient, written out.

Model learning spends nearly all its time in one step repeated thousands of times per round: forward pass of all
members, (weighted) Gaussian NLL, backward pass, Adam. :class:`EnsembleNLLGradient` computes that loss and its
parameter gradients with the same batched matmuls autograd would run, but without building and walking a graph: the
derivatives of the NLL and of the soft log-variance bounds are in closed form, the SiLU backward is one fused op, the
weight-decay term is folded into the weight-gradient matmul (``baddbmm``), and the batched matmuls are split to keep
every thread busy (:func:`~sb3_tom.kernels.batched_matmul`). ``tests/test_dynamics.py`` checks it against autograd on
the same loss.
"""

import torch as th
from torch.nn import functional as F

from sb3_tom.dynamics.ensemble import LOGVAR_BOUND_PENALTY, GaussianEnsemble
from sb3_tom.kernels import batched_matmul


class EnsembleNLLGradient:
    """
    Loss and gradients of ``weighted_nll_loss + logvar_bound_penalty + weight_decay_loss`` (the objective of
    :class:`~sb3_tom.dynamics.training.EnsembleTrainer`) for all members at once.

    :param ensemble: The model; its parameters are read on every call (they may change between calls).
    """

    def __init__(self, ensemble: GaussianEnsemble) -> None:
        self.ensemble = ensemble
        self.layers = [*ensemble.layers, ensemble.output_layer]
        self.params: list[th.Tensor] = list(ensemble.parameters())

    def __call__(
        self, inputs: th.Tensor, targets: th.Tensor, sample_weight: th.Tensor | None = None
    ) -> tuple[th.Tensor, list[th.Tensor]]:
        """
        :param inputs: Standardised inputs ``(members, batch, input_dim)``.
        :param targets: Targets ``(members, batch, output_dim)``.
        :param sample_weight: Per-sample weights ``(members, batch)``, or None for plain maximum likelihood.
        :return: The loss (0-d) and the gradient of every parameter, in the order of ``self.params``.
        """
        ensemble = self.ensemble
        with th.no_grad():
            # Forward pass, keeping each hidden layer's pre-activation (SiLU's backward needs it) and input
            layer_inputs = [inputs]
            pre_activations = []
            h = inputs
            for layer in self.layers[:-1]:
                z = batched_matmul(h, layer.weight, layer.bias)
                h = F.silu(z)
                pre_activations.append(z)
                layer_inputs.append(h)
            output_layer = self.layers[-1]
            mean, raw_logvar = batched_matmul(h, output_layer.weight, output_layer.bias).split(ensemble.output_dim, dim=-1)
            # Soft bounds, as GaussianEnsemble._bounded
            max_logvar, min_logvar = ensemble.max_logvar, ensemble.min_logvar
            below_max = max_logvar - raw_logvar
            upper = max_logvar - F.softplus(below_max)
            above_min = upper - min_logvar
            logvar = min_logvar + F.softplus(above_min)

            # Loss: sum over members of mean_b w_b * mean_o ((mean - target)^2 / var + logvar)
            inv_var = th.exp(-logvar)
            error = mean - targets
            scaled_sq = error * error * inv_var
            nll = (scaled_sq + logvar).mean(-1)
            n_batch, n_out = mean.shape[1], mean.shape[2]
            if sample_weight is not None:
                nll = nll * sample_weight
            decay = sum(
                d * 0.5 * (layer.weight * layer.weight).sum()
                for d, layer in zip(ensemble.weight_decays, self.layers, strict=True)
            )
            bound_penalty = LOGVAR_BOUND_PENALTY * (max_logvar.sum() - min_logvar.sum())
            loss = nll.mean(-1).sum() + bound_penalty + decay

            # d loss / d (mean, logvar) of each element; then through the two softplus bounds (softplus' = sigmoid)
            scale = 1.0 / (n_batch * n_out)
            coef = scale if sample_weight is None else (sample_weight * scale).unsqueeze(-1)
            grad_mean = (2.0 * coef) * error * inv_var
            grad_logvar = (1.0 - scaled_sq) * coef
            grad_upper = grad_logvar * th.sigmoid(above_min)
            grad_raw = grad_upper * th.sigmoid(below_max)
            grad_min_logvar = (grad_logvar - grad_upper).sum((0, 1), keepdim=True) - LOGVAR_BOUND_PENALTY
            grad_max_logvar = (grad_upper - grad_raw).sum((0, 1), keepdim=True) + LOGVAR_BOUND_PENALTY

            # Backward through the layers; weight decay d * W enters the weight gradient's baddbmm
            grads: dict[int, th.Tensor] = {
                id(max_logvar): grad_max_logvar.reshape(max_logvar.shape),
                id(min_logvar): grad_min_logvar.reshape(min_logvar.shape),
            }
            grad = th.cat([grad_mean, grad_raw], dim=-1)
            for i in range(len(self.layers) - 1, -1, -1):
                layer = self.layers[i]
                weight_decay = ensemble.weight_decays[i]
                grads[id(layer.weight)] = batched_matmul(layer_inputs[i].transpose(1, 2), grad, layer.weight, weight_decay)
                grads[id(layer.bias)] = grad.sum(1, keepdim=True)
                if i > 0:
                    grad_h = batched_matmul(grad, layer.weight.transpose(1, 2))
                    grad = th.ops.aten.silu_backward(grad_h, pre_activations[i - 1])
        return loss, [grads[id(p)] for p in self.params]
