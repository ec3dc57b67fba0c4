"""TOM's discriminator over ``(s, a, s')``: recent (current-policy) transitions vs the whole replay buffer."""

from dataclasses import dataclass

import torch as th
from torch import nn
from torch.nn import functional as F

from sb3_tom.buffers import Transitions


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

    :param recent: Raw inputs of the recent transitions (positives), ``(n_recent, d)``.
    :param buffer: Raw inputs of the whole replay buffer (negatives are drawn uniformly from it), ``(n, d)``.
    :param optimizer: Optimiser of the trained parameters (see :func:`make_discriminator_optimizer`).
    """
    discriminator.fit_normalizer(buffer)
    device = recent.device
    n_recent, n_buffer = recent.shape[0], buffer.shape[0]
    labels = th.cat([th.ones(batch_size, device=device), th.full((batch_size,), soft_label, device=device)])
    loss = th.zeros((), device=device)
    correct = th.zeros((), device=device)
    for _ in range(n_steps):
        pos = recent[th.randint(n_recent, (batch_size,), device=device)]
        neg = buffer[th.randint(n_buffer, (batch_size,), device=device)]
        logits = discriminator(th.cat([pos, neg]))
        bce = F.binary_cross_entropy_with_logits(logits, labels)
        alpha = th.rand(batch_size, 1, device=device)
        mixed = (alpha * pos + (1 - alpha) * neg).requires_grad_(True)
        (grad,) = th.autograd.grad(discriminator(mixed).sum(), mixed, create_graph=True)
        penalty = gradient_penalty * ((grad.norm(dim=1) - 1) ** 2).mean()
        loss = bce + penalty
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with th.no_grad():
            correct = ((logits[:batch_size] > 0).float().mean() + (logits[batch_size:] <= 0).float().mean()) / 2
    return DiscriminatorStats(loss=float(loss.detach()), accuracy=float(correct))
