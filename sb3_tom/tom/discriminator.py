"""TOM's discriminator over ``(s, a, s')``: recent (current-policy) transitions vs the whole replay buffer."""

from dataclasses import dataclass

import torch as th
from torch import nn
from torch.nn import functional as F

from sb3_tom.buffers import Transitions
from sb3_tom.kernels import grad_input, grad_weight, linear
from sb3_tom.optim import AdamKernel


class TransitionDiscriminator(nn.Module):
    """
    ``D(s, a, s')``: three branches (``s``, ``a``, ``s'`` → ``branch_size`` each, tanh), then
    ``3 * branch_size → hidden_size`` (tanh) ``→ 1``. The output is a logit; it serves as the log density ratio
    ``r(s, a, s') = log d^π / d^D``.

    :param obs_dim: Observation size.
    :param action_dim: Action size.
    :param branch_size: Width of each input branch.
    :param hidden_size: Width of the hidden layer of the head.
    :param standardize_inputs: Standardise inputs with the statistics set by :meth:`fit_normalizer` (a fix; the
        official code feeds raw inputs).
    """

    def __init__(
        self, obs_dim: int, action_dim: int, branch_size: int = 128, hidden_size: int = 256, standardize_inputs: bool = True
    ) -> None:
        super().__init__()
        self.obs_dim, self.action_dim = obs_dim, action_dim
        self.standardize_inputs = standardize_inputs
        self.obs_branch = nn.Linear(obs_dim, branch_size)
        self.action_branch = nn.Linear(action_dim, branch_size)
        self.next_obs_branch = nn.Linear(obs_dim, branch_size)
        self.head = nn.Sequential(nn.Linear(3 * branch_size, hidden_size), nn.Tanh(), nn.Linear(hidden_size, 1))
        input_dim = 2 * obs_dim + action_dim
        self.register_buffer("input_mean", th.zeros(input_dim))
        self.register_buffer("input_std", th.ones(input_dim))
        self.input_mean: th.Tensor
        self.input_std: th.Tensor

    @staticmethod
    def inputs(data: Transitions) -> th.Tensor:
        """Raw discriminator inputs ``[s, a, s']``."""
        return th.cat([data.observations, data.actions, data.next_observations], dim=-1)

    def fit_normalizer(self, inputs: th.Tensor) -> None:
        if self.standardize_inputs:
            self.input_mean.copy_(inputs.mean(0))
            self.input_std.copy_(inputs.std(0).clamp_min(1e-6))

    def forward(self, inputs: th.Tensor) -> th.Tensor:
        """Logits of shape ``(batch,)`` for raw inputs ``[s, a, s']`` of shape ``(batch, 2 * obs_dim + action_dim)``."""
        x = (inputs - self.input_mean) / self.input_std
        s, a, s_next = x.split([self.obs_dim, self.action_dim, self.obs_dim], dim=-1)
        h = th.cat([th.tanh(self.obs_branch(s)), th.tanh(self.action_branch(a)), th.tanh(self.next_obs_branch(s_next))], -1)
        return self.head(h).squeeze(-1)

    def head_parameters(self) -> list[nn.Parameter]:
        return list(self.head.parameters())


def make_discriminator_optimizer(
    discriminator: TransitionDiscriminator, learning_rate: float = 3e-4, head_only: bool = False
) -> th.optim.Adam:
    """
    Adam over all parameters, or only over the head (``head_only``: the official code's behaviour, which leaves the
    input branches at their random initialisation).
    """
    params = discriminator.head_parameters() if head_only else list(discriminator.parameters())
    return th.optim.Adam(params, lr=learning_rate)


@dataclass
class DiscriminatorStats:
    loss: float
    accuracy: float  # on the last batches: recent classified positive, buffer samples negative


def train_discriminator(
    discriminator: TransitionDiscriminator,
    recent: th.Tensor,
    buffer: th.Tensor,
    optimizer: th.optim.Optimizer,
    n_steps: int = 400,
    batch_size: int = 256,
    gradient_penalty: float = 10.0,
    soft_label: float = 0.1,
) -> DiscriminatorStats:
    """
    Train ``discriminator`` to tell ``recent`` inputs (label 1) from ``buffer`` inputs (soft label ``soft_label``),
    with a gradient penalty ``gradient_penalty * (||∇D(x̃)|| - 1)^2`` on random interpolates.

    Each step computes the same loss and gradient as autograd would (``bce + penalty``, the penalty differentiated
    through ``∇D``), written out by :class:`DiscriminatorGradient`, and applies them with the optimizer's Adam step.

    :param recent: Raw inputs of the recent transitions (positives), ``(n_recent, d)``.
    :param buffer: Raw inputs of the whole replay buffer (negatives are drawn uniformly from it), ``(n, d)``.
    :param optimizer: Optimiser of the trained parameters (see :func:`make_discriminator_optimizer`).
    """
    discriminator.fit_normalizer(buffer)
    device = recent.device
    n_recent, n_buffer = recent.shape[0], buffer.shape[0]
    labels = th.cat([th.ones(batch_size, device=device), th.full((batch_size,), soft_label, device=device)])
    trained = [p for group in optimizer.param_groups for p in group["params"]]
    gradient = DiscriminatorGradient(discriminator)
    names = {id(p): name for name, p in discriminator.named_parameters()}
    adam = AdamKernel(optimizer, trained)
    loss = th.zeros((), device=device)
    correct = th.zeros((), device=device)
    with th.no_grad():
        for _ in range(n_steps):
            pos = recent[th.randint(n_recent, (batch_size,), device=device)]
            neg = buffer[th.randint(n_buffer, (batch_size,), device=device)]
            alpha = th.rand(batch_size, 1, device=device)
            mixed = alpha * pos + (1 - alpha) * neg
            loss, logits, grads = gradient(th.cat([pos, neg]), labels, mixed, gradient_penalty)
            adam.step([grads[names[id(p)]] for p in trained])
            correct = ((logits[:batch_size] > 0).float().mean() + (logits[batch_size:] <= 0).float().mean()) / 2
    return DiscriminatorStats(loss=float(loss), accuracy=float(correct))


class DiscriminatorGradient:
    """
    Loss and parameter gradients of one discriminator step, written out (no autograd, no double backward).

    With ``z = (x - mean) / std``, branches ``h = tanh(W1 z + b1)`` (``W1`` block-diagonal over ``s, a, s'``), head
    ``g = tanh(W2 h + b2)`` and logit ``w3 · g + b3``: the BCE gradient is ordinary back-propagation, and the penalty
    ``λ mean((||∇_x D|| - 1)^2)`` with ``∇_x D = (W1^T ((1 - h^2) ⊙ W2^T ((1 - g^2) ⊙ w3))) / std`` is differentiated
    through that expression, including its dependence on ``h`` and ``g``.

    :param discriminator: The discriminator (its parameters are read at each call).
    """

    def __init__(self, discriminator: TransitionDiscriminator) -> None:
        self.d = discriminator
        self.blocks = [discriminator.obs_branch, discriminator.action_branch, discriminator.next_obs_branch]
        self.in_sizes = [discriminator.obs_dim, discriminator.action_dim, discriminator.obs_dim]
        self.out_sizes = [layer.out_features for layer in self.blocks]
        hidden, output = discriminator.head[0], discriminator.head[2]
        assert isinstance(hidden, nn.Linear) and isinstance(output, nn.Linear)
        self.hidden: nn.Linear = hidden
        self.output: nn.Linear = output

    def _branch_weight(self) -> th.Tensor:
        """The three branches as one block-diagonal ``(3 * branch, d)`` weight."""
        return th.block_diag(*[layer.weight for layer in self.blocks])

    def _split_branch_grad(self, grad_w1: th.Tensor, grad_b1: th.Tensor) -> dict[str, th.Tensor]:
        grads = {}
        rows = grad_w1.split(self.out_sizes, dim=0)
        biases = grad_b1.split(self.out_sizes)
        for i, (name, block, bias) in enumerate(
            zip(("obs_branch", "action_branch", "next_obs_branch"), rows, biases, strict=True)
        ):
            start = sum(self.in_sizes[:i])
            grads[f"{name}.weight"] = block[:, start : start + self.in_sizes[i]].contiguous()
            grads[f"{name}.bias"] = bias
        return grads

    def __call__(
        self, inputs: th.Tensor, labels: th.Tensor, mixed: th.Tensor, gradient_penalty: float
    ) -> tuple[th.Tensor, th.Tensor, dict[str, th.Tensor]]:
        """
        :param inputs: Raw inputs of the classified batch.
        :param labels: Their labels.
        :param mixed: Raw interpolates for the gradient penalty.
        :return: loss, logits of ``inputs``, and the gradient of every parameter by name.
        """
        d = self.d
        w1, b1 = self._branch_weight(), th.cat([layer.bias for layer in self.blocks])
        w2, b2 = self.hidden.weight, self.hidden.bias
        w3, b3 = self.output.weight[0], self.output.bias
        inv_std, mean = 1.0 / d.input_std, d.input_mean  # zeros and ones unless standardize_inputs
        n_cls, n_gp = inputs.shape[0], mixed.shape[0]
        # Forward over both batches at once
        z = (th.cat([inputs, mixed]) - mean) * inv_std
        h = th.tanh(linear(z, w1, b1))
        g = th.tanh(linear(h, w2, b2))
        logits = g[:n_cls] @ w3 + b3
        # BCE with logits, and its gradient
        bce = F.binary_cross_entropy_with_logits(logits, labels)
        delta = (th.sigmoid(logits) - labels) / n_cls
        # Gradient penalty: input gradients of the interpolates
        h_gp, g_gp = h[n_cls:], g[n_cls:]
        one_g = 1 - g_gp**2
        one_h = 1 - h_gp**2
        u = one_g * w3
        v = grad_input(u, w2)
        p = one_h * v
        grad_z = grad_input(p, w1)
        grad_x = grad_z * inv_std
        norm = grad_x.norm(dim=1, keepdim=True)
        penalty = gradient_penalty * ((norm - 1) ** 2).mean()
        grad_grad_x = gradient_penalty * 2 * (norm - 1) / norm.clamp_min(1e-12) * grad_x / n_gp
        grad_grad_z = grad_grad_x * inv_std
        # Through grad_z = p W1, p = (1 - h^2) v, v = u W2, u = (1 - g^2) w3
        grad_w1 = grad_weight(p, grad_grad_z)
        grad_p = linear(grad_grad_z, w1)
        grad_v = grad_p * one_h
        grad_h_gp = grad_p * v * (-2 * h_gp)
        grad_w2 = grad_weight(u, grad_v)
        grad_u = linear(grad_v, w2)
        grad_w3 = (grad_u * one_g).sum(0)
        grad_g_gp = grad_u * w3 * (-2 * g_gp)
        # Ordinary back-propagation of both terms' dependence on g and h (BCE rows, then penalty rows)
        grad_g = th.cat([delta.unsqueeze(1) * w3, grad_g_gp])
        grad_w3 = grad_w3 + delta @ g[:n_cls]
        grad_b3 = delta.sum().reshape(1)
        grad_g_pre = grad_g * (1 - g**2)
        grad_w2 = grad_w2 + grad_weight(grad_g_pre, h)
        grad_b2 = grad_g_pre.sum(0)
        grad_h = grad_input(grad_g_pre, w2)
        grad_h[n_cls:] += grad_h_gp
        grad_h_pre = grad_h * (1 - h**2)
        grad_w1 = grad_w1 + grad_weight(grad_h_pre, z)
        grad_b1 = grad_h_pre.sum(0)
        grads = {
            "head.0.weight": grad_w2,
            "head.0.bias": grad_b2,
            "head.2.weight": grad_w3.unsqueeze(0),
            "head.2.bias": grad_b3,
            **self._split_branch_grad(grad_w1, grad_b1),
        }
        return bce + penalty, logits, grads
