"""TOM's dual problem: a value-like function ``Q(s, a)`` whose residuals give the importance weights."""

import torch as th
from stable_baselines3.common.torch_layers import create_mlp
from torch import nn

from sb3_tom.buffers import Transitions
from sb3_tom.dynamics.model_env import ActionSampler
from sb3_tom.kernels import AdamKernel, linear
from sb3_tom.tom.divergence import get_f_divergence


class DualValue(nn.Module):
    """
    The dual variable ``Q(s, a)``: an MLP with ReLU hidden layers, initialised as the official code's ``QNetwork``
    (Xavier-uniform weights with gain 1, zero biases).

    :param obs_dim: Observation size.
    :param action_dim: Action size.
    :param hidden_sizes: Hidden layer sizes.
    """

    def __init__(self, obs_dim: int, action_dim: int, hidden_sizes: tuple[int, ...] = (256, 256)) -> None:
        super().__init__()
        self.net = nn.Sequential(*create_mlp(obs_dim + action_dim, 1, list(hidden_sizes)))
        for module in self.net:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, obs: th.Tensor, actions: th.Tensor) -> th.Tensor:
        x = th.cat([obs, actions], dim=-1)
        layers = [module for module in self.net if isinstance(module, nn.Linear)]
        for i, layer in enumerate(layers):  # through the fast kernels (oneDNN on CPU), ReLU fused
            x = linear(x, layer.weight, layer.bias, relu=i < len(layers) - 1)
        return x.squeeze(-1)


def residuals(
    dual: DualValue,
    data: Transitions,
    log_ratio: th.Tensor,
    next_actions: th.Tensor,
    gamma: float,
) -> th.Tensor:
    """``e(s, a, s') = r + γ (1 - terminated) Q(s', a') - Q(s, a)`` for a batch (one pass of the dual network)."""
    next_q, q = dual(th.cat([data.next_observations, data.observations]), th.cat([next_actions, data.actions])).split(
        len(data)
    )
    return log_ratio + gamma * (1.0 - data.terminated) * next_q - q


class DualTrainer:
    """
    Minimises ``(1-γ) E_{s0~μ0, a0~π}[Q(s0, a0)] + E_D[f*(e)]`` over ``Q``, kept across rounds.

    Each step differentiates :meth:`loss` with autograd (the network's matmuls run on the fast kernels of
    :mod:`sb3_tom.kernels`) and applies Adam's fused kernel.

    :param dual: The dual network.
    :param f_divergence: ``"chi"`` (chi-square) or ``"kl"``.
    :param gamma: Discount of the occupancy measures.
    :param learning_rate: Adam learning rate.
    :param weight_decay: Adam weight decay.
    :param batch_size: Minibatch size (buffer transitions and start states).
    """

    def __init__(
        self,
        dual: DualValue,
        f_divergence: str = "chi",
        gamma: float = 0.99,
        learning_rate: float = 3e-4,
        weight_decay: float = 1e-4,
        batch_size: int = 256,
    ) -> None:
        self.dual = dual
        self.divergence = get_f_divergence(f_divergence)
        self.gamma = gamma
        self.batch_size = batch_size
        self.optimizer = th.optim.Adam(dual.parameters(), lr=learning_rate, weight_decay=weight_decay)

    def train(
        self,
        data: Transitions,
        log_ratio: th.Tensor,
        start_observations: th.Tensor,
        sample_actions: ActionSampler,
        n_steps: int,
    ) -> float:
        """
        :param data: Replay-buffer transitions.
        :param log_ratio: ``r(s, a, s')`` of each transition of ``data``.
        :param start_observations: Episode-start states (``μ0``).
        :param sample_actions: Samples actions of the current policy (no gradient needed).
        :param n_steps: Gradient steps.
        :return: The loss of the last step.
        """
        device = log_ratio.device
        n, n_start, size = len(data), start_observations.shape[0], self.batch_size
        params: list[th.Tensor] = list(self.dual.parameters())
        adam = AdamKernel(self.optimizer, params)
        loss = th.zeros((), device=device)
        for _ in range(n_steps):
            idx = th.randint(n, (size,), device=device)
            batch = data.index(idx)
            s0 = start_observations[th.randint(n_start, (size,), device=device)]
            with th.no_grad():  # one policy pass for a0 ~ pi(s0) and a' ~ pi(s')
                a0, next_actions = sample_actions(th.cat([s0, batch.next_observations])).split(size)
            loss = self.loss(batch, log_ratio[idx], s0, a0, next_actions)
            adam.step(list(th.autograd.grad(loss, params)))
        return float(loss.detach())

    def loss(
        self, batch: Transitions, log_ratio: th.Tensor, s0: th.Tensor, a0: th.Tensor, next_actions: th.Tensor
    ) -> th.Tensor:
        """
        The dual loss of a minibatch, ``(1-γ) mean Q(s0, a0) + mean f*(e)`` with the residuals
        ``e = r(s, a, s') + γ (1 - terminated) Q(s', a') - Q(s, a)``; differentiable in the dual's parameters.

        :param batch: Buffer transitions; ``log_ratio`` their ``r(s, a, s')``.
        :param s0: Start states, ``a0`` the policy's actions there; ``next_actions`` the policy's actions at ``s'``.
        """
        e = residuals(self.dual, batch, log_ratio, next_actions, self.gamma)
        return (1 - self.gamma) * self.dual(s0, a0).mean() + self.divergence.conjugate_mean(e)
