"""TOM's dual problem: a value-like function ``Q(s, a)`` whose residuals give the importance weights."""

from collections.abc import Callable
from dataclasses import dataclass

import torch as th
from torch import nn

from sb3_tom.buffers import Transitions
from sb3_tom.dense import Dense, linear_layers
from sb3_tom.optim import AdamKernel
from sb3_tom.tom.divergence import get_f_divergence

ActionSampler = Callable[[th.Tensor], th.Tensor]


class DualValue(nn.Module):
    """
    The dual variable ``Q(s, a)``: an MLP with ReLU hidden layers.

    :param obs_dim: Observation size.
    :param action_dim: Action size.
    :param hidden_sizes: Hidden layer sizes.
    """

    def __init__(self, obs_dim: int, action_dim: int, hidden_sizes: tuple[int, ...] = (256, 256)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        last = obs_dim + action_dim
        for size in hidden_sizes:
            layers += [nn.Linear(last, size), nn.ReLU()]
            last = size
        layers.append(nn.Linear(last, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, obs: th.Tensor, actions: th.Tensor) -> th.Tensor:
        return self.net(th.cat([obs, actions], dim=-1)).squeeze(-1)


def residuals(
    dual: DualValue,
    data: Transitions,
    log_ratio: th.Tensor,
    next_actions: th.Tensor,
    gamma: float,
) -> th.Tensor:
    """``e(s, a, s') = r + γ (1 - terminated) Q(s', a') - Q(s, a)`` for a batch."""
    next_q = dual(data.next_observations, next_actions)
    return log_ratio + gamma * (1.0 - data.terminated) * next_q - dual(data.observations, data.actions)


@dataclass
class DualStats:
    loss: float


class DualTrainer:
    """
    Minimises ``(1-γ) E_{s0~μ0, a0~π}[Q(s0, a0)] + E_D[f*(e)]`` over ``Q``, kept across rounds.

    The gradient of each step is written out (the divergence's ``conjugate_mean_grad``, then a hand-written backward
    pass through the ReLU network, :class:`~sb3_tom.dense.Dense`) and applied by Adam's fused kernel: the same update as
    ``loss.backward(); optimizer.step()``, without building an autograd graph 1000 times a round.

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
        layers = linear_layers(dual.net)
        assert layers is not None, "DualValue.net is a Sequential of Linear/ReLU layers"
        self.dense = Dense.of(layers)

    def train(
        self,
        data: Transitions,
        log_ratio: th.Tensor,
        start_observations: th.Tensor,
        sample_actions: ActionSampler,
        n_steps: int,
    ) -> DualStats:
        """
        :param data: Replay-buffer transitions.
        :param log_ratio: ``r(s, a, s')`` of each transition of ``data``.
        :param start_observations: Episode-start states (``μ0``).
        :param sample_actions: Samples actions of the current policy (no gradient needed).
        :param n_steps: Gradient steps.
        """
        device = log_ratio.device
        n, n_start, size = len(data), start_observations.shape[0], self.batch_size
        gamma = self.gamma
        adam = AdamKernel(self.optimizer, self.dense.parameters())
        loss = th.zeros((), device=device)
        with th.no_grad():
            for _ in range(n_steps):
                idx = th.randint(n, (size,), device=device)
                batch = data.index(idx)
                s0 = start_observations[th.randint(n_start, (size,), device=device)]
                # One policy pass for a0 ~ pi(s0) and a' ~ pi(s'), one dual pass for Q(s0, a0), Q(s', a'), Q(s, a)
                a0, next_actions = sample_actions(th.cat([s0, batch.next_observations])).split(size)
                inputs = th.cat(
                    [
                        th.cat([s0, batch.next_observations, batch.observations]),
                        th.cat([a0, next_actions, batch.actions]),
                    ],
                    dim=1,
                )
                activations = self.dense.forward(inputs)
                q0, next_q, q = activations[-1].squeeze(1).split(size)
                not_done = gamma * (1.0 - batch.terminated)
                e = log_ratio[idx] + not_done * next_q - q
                loss = (1 - gamma) * q0.mean() + self.divergence.conjugate_mean(e)
                grad_e = self.divergence.conjugate_mean_grad(e)
                grad_q = th.cat([th.full_like(q0, (1 - gamma) / size), grad_e * not_done, -grad_e]).unsqueeze(1)
                adam.step(self.dense.backward(grad_q, activations))
        return DualStats(loss=float(loss))
