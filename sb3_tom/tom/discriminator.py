"""TOM's discriminator over ``(s, a, s')``: recent (current-policy) transitions vs the whole replay buffer."""

from dataclasses import dataclass

import torch as th
from torch import nn
from torch.nn import functional as F

from sb3_tom.buffers import Transitions
from sb3_tom.normalization import fit_standardization


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
        """Set the input standardisation from raw inputs (constant columns get std 1); no-op without standardisation."""
        if self.standardize_inputs:
            fit_standardization(self.input_mean, self.input_std, inputs)

    def standardize(self, inputs: th.Tensor) -> th.Tensor:
        """The network's view of raw inputs (unchanged unless ``standardize_inputs``)."""
        return (inputs - self.input_mean) / self.input_std

    def logits(self, z: th.Tensor) -> th.Tensor:
        """Logits ``(batch,)`` of standardised inputs ``z`` (see :meth:`standardize`)."""
        s, a, s_next = z.split([self.obs_dim, self.action_dim, self.obs_dim], dim=-1)
        h = th.cat([th.tanh(self.obs_branch(s)), th.tanh(self.action_branch(a)), th.tanh(self.next_obs_branch(s_next))], -1)
        return self.head(h).squeeze(-1)

    def forward(self, inputs: th.Tensor) -> th.Tensor:
        """Logits of shape ``(batch,)`` for raw inputs ``[s, a, s']`` of shape ``(batch, 2 * obs_dim + action_dim)``."""
        return self.logits(self.standardize(inputs))


def make_discriminator_optimizer(
    discriminator: TransitionDiscriminator, learning_rate: float = 3e-4, head_only: bool = False
) -> th.optim.Adam:
    """
    Adam over all parameters, or only over the head (``head_only``: the official code's behaviour, which leaves the
    input branches at their random initialisation).
    """
    params = list(discriminator.head.parameters()) if head_only else list(discriminator.parameters())
    return th.optim.Adam(params, lr=learning_rate)


@dataclass
class DiscriminatorStats:
    loss: float
    accuracy: float  # on the last batches: recent classified positive, buffer samples negative


def discriminator_loss(
    discriminator: TransitionDiscriminator,
    positives: th.Tensor,
    negatives: th.Tensor,
    alpha: th.Tensor,
    gradient_penalty: float = 10.0,
    soft_label: float = 0.1,
) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
    """
    TOM's discriminator loss (as the official code): ``BCE(D(recent), 1).mean() + BCE(D(buffer), soft_label).mean()``
    plus ``gradient_penalty * mean((||∇_z D(z̃)|| - 1)^2)`` on interpolates ``z̃ = α z_pos + (1 - α) z_neg``.

    The penalty is taken in the standardised space ``z`` the network sees: in raw units it would weight an input
    dimension by ``1 / std``, so a near-constant dimension would swamp the classification loss.

    :param positives: Raw inputs of recent transitions, ``(batch, d)``.
    :param negatives: Raw inputs of buffer transitions, ``(batch, d)``.
    :param alpha: Interpolation coefficients, ``(batch, 1)``.
    :return: The loss, and the logits of the positives and of the negatives.
    """
    z_pos, z_neg = discriminator.standardize(positives), discriminator.standardize(negatives)
    logits_pos, logits_neg = discriminator.logits(z_pos), discriminator.logits(z_neg)
    loss = F.binary_cross_entropy_with_logits(logits_pos, th.ones_like(logits_pos)) + F.binary_cross_entropy_with_logits(
        logits_neg, th.full_like(logits_neg, soft_label)
    )
    if gradient_penalty > 0:
        mixed = (alpha * z_pos + (1 - alpha) * z_neg).requires_grad_(True)
        (grad,) = th.autograd.grad(discriminator.logits(mixed).sum(), mixed, create_graph=True)
        loss = loss + gradient_penalty * ((grad.norm(dim=1) - 1) ** 2).mean()
    return loss, logits_pos, logits_neg


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
    Train ``discriminator`` to tell ``recent`` inputs (label 1) from ``buffer`` inputs (soft label ``soft_label``)
    with :func:`discriminator_loss`; the input standardisation is fitted on ``buffer`` first.

    :param recent: Raw inputs of the recent transitions (positives), ``(n_recent, d)``.
    :param buffer: Raw inputs of the whole replay buffer (negatives are drawn uniformly from it), ``(n, d)``.
    :param optimizer: Optimiser of the trained parameters (see :func:`make_discriminator_optimizer`).
    """
    discriminator.fit_normalizer(buffer)
    device = recent.device
    loss = th.full((), float("nan"), device=device)
    accuracy = th.full((), float("nan"), device=device)
    for _ in range(n_steps):
        positives = recent[th.randint(recent.shape[0], (batch_size,), device=device)]
        negatives = buffer[th.randint(buffer.shape[0], (batch_size,), device=device)]
        alpha = th.rand(batch_size, 1, device=device)
        loss, logits_pos, logits_neg = discriminator_loss(
            discriminator, positives, negatives, alpha, gradient_penalty, soft_label
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        accuracy = ((logits_pos > 0).float().mean() + (logits_neg <= 0).float().mean()) / 2
    return DiscriminatorStats(loss=float(loss.detach()), accuracy=float(accuracy))
