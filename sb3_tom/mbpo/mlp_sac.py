"""
SAC gradient steps for SB3's MLP policies with hand-written backward passes (no autograd graph).

The maths is that of ``SAC.train`` (see :mod:`sb3_tom.mbpo.fast_sac` for the order of operations); only the way it
is computed changes:

* one actor pass over ``[s; s']`` (both use the same, not yet updated, actor);
* the gradients of the critic loss, of the actor loss through the updated critics (to the actions only) and of the
  actor are written out layer by layer, so a step is a fixed list of matmuls and a few element-wise ops, with no
  graph to build and walk; where the log-density of the squashed Gaussian has terms whose gradients cancel
  analytically (``u - mean = eps * std``), the closed form is used;
* the matmuls go through :mod:`sb3_tom.kernels` (oneDNN on CPU).

It applies to SB3's default SAC architecture family: ``FlattenExtractor`` features, ReLU hidden layers
(any ``net_arch``, any number of critics), no gSDE, no batch norm. :func:`mlp_sac_supported` says whether an agent
qualifies; ``fast_sac_train`` uses this path when it does.
"""

import torch as th
from stable_baselines3.common.torch_layers import FlattenExtractor
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from stable_baselines3.sac import SAC
from stable_baselines3.sac.policies import LOG_STD_MAX, LOG_STD_MIN
from torch import nn

from sb3_tom.dense import Dense, linear_layers
from sb3_tom.kernels import AdamKernel, grad_input, grad_weight, linear, relu_backward
from sb3_tom.mbpo.squashed_gaussian import squashed_gaussian_sample


def mlp_sac_supported(model: SAC) -> bool:
    """Whether :class:`MLPSACStep` applies to ``model`` (SB3's default SAC architecture family)."""
    actor, critic = model.actor, model.critic
    if model.use_sde or actor.use_sde or list(model.batch_norm_stats):
        return False
    extractors = [actor.features_extractor, critic.features_extractor, model.critic_target.features_extractor]
    if not all(type(e) is FlattenExtractor for e in extractors):
        return False
    if len(model.observation_space.shape or ()) != 1:  # type: ignore[union-attr]
        return False
    latent = linear_layers(actor.latent_pi)
    if latent is None or (latent and not isinstance(list(actor.latent_pi.children())[-1], nn.ReLU)):
        return False
    if not (isinstance(actor.mu, nn.Linear) and isinstance(actor.log_std, nn.Linear)):
        return False
    for q_net in [*critic.q_networks, *model.critic_target.q_networks]:
        layers = linear_layers(q_net)
        if layers is None or not layers or isinstance(list(q_net.children())[-1], nn.ReLU):
            return False
    actor_params = {id(p) for group in actor.optimizer.param_groups for p in group["params"] if p.requires_grad}
    computed = {id(p) for p in [*actor.latent_pi.parameters(), *actor.mu.parameters(), *actor.log_std.parameters()]}
    critic_params = {id(p) for group in critic.optimizer.param_groups for p in group["params"] if p.requires_grad}
    return actor_params == computed and critic_params == {id(p) for q in critic.q_networks for p in q.parameters()}


class MLPSACStep:
    """
    One SAC gradient step of ``model`` per :meth:`__call__`, on the modules and optimizers of its policy.

    :param model: A SAC agent for which :func:`mlp_sac_supported` holds.
    """

    def __init__(self, model: SAC) -> None:
        self.model = model
        actor, critic = model.actor, model.critic
        latent = linear_layers(actor.latent_pi) or []
        self.actor_hidden = Dense.of(latent)
        # mean and log-std heads as one layer (their weights are concatenated once per step)
        assert isinstance(actor.mu, nn.Linear) and isinstance(actor.log_std, nn.Linear)
        self.mu: nn.Linear = actor.mu
        self.log_std: nn.Linear = actor.log_std
        self.action_dim: int = actor.mu.out_features
        self.obs_dim: int = model.observation_space.shape[0]  # type: ignore[index]
        self.critics: list[Dense] = [Dense.of(linear_layers(q) or []) for q in critic.q_networks]
        self.targets: list[Dense] = [Dense.of(linear_layers(q) or []) for q in model.critic_target.q_networks]
        self.critic_params = [p for dense in self.critics for p in dense.parameters()]
        self.actor_params = [*self.actor_hidden.parameters(), self.mu.weight, self.mu.bias]
        self.actor_params += [self.log_std.weight, self.log_std.bias]
        self.epsilon: float = actor.action_dist.epsilon  # type: ignore[union-attr]
        self.ent_coef: EntCoefState = EntCoefState(model)
        #: Entropy-coefficient losses of the steps so far (empty for a fixed coefficient)
        self.ent_coef_losses: list[th.Tensor] = self.ent_coef.losses
        self.critic_adam: AdamKernel = AdamKernel(critic.optimizer, self.critic_params)
        self.actor_adam: AdamKernel = AdamKernel(actor.optimizer, self.actor_params)

    def _policy(
        self, obs: th.Tensor, head_weight: th.Tensor
    ) -> tuple[list[th.Tensor], th.Tensor, th.Tensor, th.Tensor, th.Tensor, th.Tensor]:
        """
        Squashed-Gaussian actions and log-probabilities (as SB3's ``actor.action_log_prob``).

        :param head_weight: The mean and log-std head weights stacked, ``(2 * action_dim, hidden)``.

        :return: hidden activations, actions ``a``, log-probs ``(batch,)``, ``eps``, ``std`` and the mask of log-stds
            inside the clamp range.
        """
        hidden = self.actor_hidden.forward(obs, n_hidden=len(self.actor_hidden.weights))
        head = linear(hidden[-1], head_weight, th.cat([self.mu.bias, self.log_std.bias]))
        mean, raw_log_std = head.split(self.action_dim, dim=1)
        sample = squashed_gaussian_sample(mean, raw_log_std, self.epsilon)
        in_range = (raw_log_std >= LOG_STD_MIN) & (raw_log_std <= LOG_STD_MAX)
        return hidden, sample.actions, sample.log_prob, sample.eps, sample.std, in_range

    @staticmethod
    def _min_q(critics: list[Dense], x: th.Tensor) -> tuple[th.Tensor, th.Tensor, list[list[th.Tensor]]]:
        """Minimum over ``critics`` of ``Q_j(x)`` ``(batch,)``, the index of the minimum, and each critic's activations."""
        activations = [critic.forward(x) for critic in critics]
        q_min, argmin = th.cat([acts[-1] for acts in activations], dim=1).min(dim=1)
        return q_min, argmin, activations

    @th.no_grad()
    def __call__(self, batch: ReplayBufferSamples) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """
        One gradient step on ``batch``.

        :return: critic loss, actor loss and the entropy coefficient used (0-d tensors).
        """
        model = self.model
        # float32 as SB3's preprocess_obs makes Box observations (a float64 space is stored as float64)
        obs, actions, next_obs = batch.observations.float(), batch.actions.float(), batch.next_observations.float()
        n = obs.shape[0]
        discounts = batch.discounts if batch.discounts is not None else model.gamma

        # Actor on s (kept for the actor loss) and s' (for the TD target) in one pass
        # Mean and log-std heads as one layer (the actor is only updated at the end of the step)
        head_weight = th.cat([self.mu.weight, self.log_std.weight])
        hidden, all_actions, all_log_prob, all_eps, all_std, all_in_range = self._policy(th.cat([obs, next_obs]), head_weight)
        actions_pi, log_prob = all_actions[:n], all_log_prob[:n]
        ent_coef = self.ent_coef.step(log_prob)

        # TD target with the target critics
        next_q, _, _ = self._min_q(self.targets, th.cat([next_obs, all_actions[n:]], dim=1))
        next_q = next_q.unsqueeze(1) - ent_coef * all_log_prob[n:].unsqueeze(1)
        target_q = batch.rewards + (1 - batch.dones) * discounts * next_q

        # Critic loss 0.5 * sum_j mean((Q_j - y)^2) and its gradient
        critic_in = th.cat([obs, actions], dim=1)
        critic_loss = th.zeros((), device=obs.device)
        critic_grads: list[th.Tensor] = []
        for critic in self.critics:
            critic_activations = critic.forward(critic_in)
            error = critic_activations[-1] - target_q
            critic_loss = critic_loss + 0.5 * (error**2).mean()
            critic_grads += critic.backward(error / n, critic_activations)
        self.critic_adam.step(critic_grads)

        # Actor loss mean(alpha * log pi(a|s) - min_j Q_j(s, a)) with the updated critics
        q_pi, argmin, pi_activations = self._min_q(self.critics, th.cat([obs, actions_pi], dim=1))
        actor_loss = (ent_coef * log_prob - q_pi).mean()
        grad_actions = th.zeros_like(actions_pi)
        action_columns = slice(self.obs_dim, None)
        for j, critic in enumerate(self.critics):
            grad_q = -(argmin == j).to(obs.dtype).unsqueeze(1) / n
            grad_actions += critic.input_gradient(grad_q, pi_activations[j], action_columns)
        # Through tanh, the Gaussian sample u = mean + eps * std and the log-density (whose mean-gradient cancels)
        one_minus_a2 = 1 - actions_pi**2
        grad_u = grad_actions * one_minus_a2 + (ent_coef / n) * 2 * actions_pi * one_minus_a2 / (one_minus_a2 + self.epsilon)
        eps, std = all_eps[:n], all_std[:n]
        grad_mean = grad_u
        grad_log_std = (grad_u * eps * std - ent_coef / n) * all_in_range[:n]
        grad_head = th.cat([grad_mean, grad_log_std], dim=1)
        head_input = hidden[-1][:n]
        grad_head_weight = grad_weight(grad_head, head_input)
        grad_head_bias = grad_head.sum(0)
        actor_grads: list[th.Tensor] = []
        if self.actor_hidden.weights:
            grad_hidden = relu_backward(grad_input(grad_head, head_weight), head_input)
            actor_grads = self.actor_hidden.backward(grad_hidden, [h[:n] for h in hidden])
        a = self.action_dim
        actor_grads += [grad_head_weight[:a], grad_head_bias[:a], grad_head_weight[a:], grad_head_bias[a:]]
        self.actor_adam.step(actor_grads)
        return critic_loss, actor_loss, ent_coef.reshape(())


class EntCoefState:
    """
    The entropy coefficient of a SAC agent: learned (``ent_coef="auto"``: one Adam step on
    ``-log_alpha * (log_prob + target_entropy)`` per gradient step) or fixed.
    """

    def __init__(self, model: SAC) -> None:
        self.log_ent_coef = model.log_ent_coef if model.ent_coef_optimizer is not None else None
        self.optimizer = model.ent_coef_optimizer
        self.fixed = model.ent_coef_tensor if self.log_ent_coef is None else None
        self.target_entropy = float(model.target_entropy) if self.log_ent_coef is not None else 0.0
        self.losses: list[th.Tensor] = []
        self.adam = (
            None if self.optimizer is None or self.log_ent_coef is None else AdamKernel(self.optimizer, [self.log_ent_coef])
        )

    def step(self, log_prob: th.Tensor) -> th.Tensor:
        """The coefficient for this gradient step (the value before its own update), updating it if learned."""
        if self.log_ent_coef is None or self.optimizer is None:
            assert self.fixed is not None
            return self.fixed
        log_ent_coef = self.log_ent_coef
        ent_coef = th.exp(log_ent_coef.detach())
        grad = -(log_prob + self.target_entropy).mean()
        self.losses.append((log_ent_coef.detach() * grad).reshape(()))
        assert self.adam is not None
        self.adam.step([grad.reshape(log_ent_coef.shape).to(log_ent_coef.dtype)])
        return ent_coef
