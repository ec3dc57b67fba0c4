"""ReLU MLPs with hand-written forward and backward passes over the kernels of :mod:`sb3_tom.kernels`."""

from dataclasses import dataclass

import torch as th
from torch import nn
from torch.nn import functional as F

from sb3_tom.kernels import grad_input, grad_weight, linear, relu_backward


@dataclass
class Dense:
    """Layers ``(weight, bias)`` of an MLP with ReLU after every layer but the last."""

    weights: list[th.Tensor]
    biases: list[th.Tensor]

    @staticmethod
    def of(layers: list[nn.Linear]) -> "Dense":
        return Dense([layer.weight for layer in layers], [layer.bias for layer in layers])

    def parameters(self) -> list[th.Tensor]:
        """``[W_0, b_0, W_1, b_1, ...]`` (the order of :meth:`backward`'s gradients)."""
        return [p for pair in zip(self.weights, self.biases, strict=True) for p in pair]

    def forward(self, x: th.Tensor, n_hidden: int | None = None) -> list[th.Tensor]:
        """Activations ``[x, h_1, ..., h_L, out]`` (ReLU on the first ``n_hidden`` layers; all but the last if None)."""
        n_hidden = len(self.weights) - 1 if n_hidden is None else n_hidden
        activations = [x]
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            activations.append(linear(activations[-1], weight, bias, relu=i < n_hidden))
        return activations

    def backward(self, grad: th.Tensor, activations: list[th.Tensor]) -> list[th.Tensor]:
        """
        Parameter gradients given ``grad``, the gradient of the last layer's pre-activation output.

        :param activations: The forward activations (as returned by :meth:`forward`): ``activations[i]`` is the input
            of layer ``i`` (a last entry, the output, is ignored).
        :return: ``[dW_0, db_0, dW_1, db_1, ...]``.
        """
        grads: list[th.Tensor] = []
        for i in range(len(self.weights) - 1, -1, -1):
            grads += [grad.sum(0), grad_weight(grad, activations[i])]
            if i > 0:
                grad = relu_backward(grad_input(grad, self.weights[i]), activations[i])
        return grads[::-1]

    def input_gradient(self, grad: th.Tensor, activations: list[th.Tensor], columns: slice) -> th.Tensor:
        """Gradient of the input columns ``columns`` given the gradient of the output (no parameter gradients)."""
        for i in range(len(self.weights) - 1, 0, -1):
            grad = relu_backward(grad_input(grad, self.weights[i]), activations[i])
        # a contiguous copy of the few columns (the BLAS is slow on a column slice of a wide matrix)
        return F.linear(grad, self.weights[0][:, columns].t().contiguous())


def linear_layers(module: nn.Module) -> list[nn.Linear] | None:
    """The ``nn.Linear`` layers of a ``Sequential`` of Linear/ReLU pairs (None if it is anything else)."""
    layers: list[nn.Linear] = []
    expect_linear = True
    for child in module.children():
        if isinstance(child, nn.Linear) and expect_linear:
            layers.append(child)
            expect_linear = False
        elif isinstance(child, nn.ReLU) and not expect_linear:
            expect_linear = True
        else:
            return None
    return layers
