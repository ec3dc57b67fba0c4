"""
Fused SAC gradient steps: the maths of Stable-Baselines3's ``SAC.train`` with less overhead per step.

``fast_sac_train(model, gradient_steps, batch_size)`` performs the same updates as ``SAC.train`` on the SB3
policy's own modules and optimizers (so the agent still saves, loads and predicts through SB3), in the same
order of operations:

1. sample ``a ~ pi(.|s)`` with its log-probability;
2. entropy-coefficient loss and step (``ent_coef="auto"``) or the fixed coefficient;
3. TD target ``r + (1 - d) * gamma * (min_j Q'_j(s', a') - alpha * log pi(a'|s'))`` with the target critics;
4. critic loss ``0.5 * sum_j MSE(Q_j(s, a), target)`` and critic step;
5. actor loss ``mean(alpha * log pi(a|s) - min_j Q_j(s, a))`` with the *updated* critics on the actions of step 1,
   and actor step;
6. Polyak update of the target critics every ``target_update_interval`` steps (counted from 0 in each call).

What makes it faster (none of it changes the maths beyond float rounding):

* all ``gradient_steps`` batches are sampled at once (``sample_many`` of the buffer when it has one, otherwise
  one ``sample`` of ``gradient_steps * batch_size`` transitions for a plain SB3 ``ReplayBuffer``);
* for SB3's MLP policies (the default ``MlpPolicy`` family), each step is :class:`~sb3_tom.mbpo.mlp_sac.MLPSACStep`:
  gradients written out layer by layer over the kernels' matmuls (oneDNN where it pays), Adam through its fused kernel
  directly;
* for any other SAC policy (gSDE, other activations or feature extractors), :class:`AutogradSACStep`: the
  squashed-Gaussian sample and log-probability are computed directly (same formulas as SB3's
  ``SquashedDiagGaussianDistribution``), the actor loss is back-propagated to the actor parameters only (SB3 also
  computes, then discards, the critic weight gradients of the actor loss); its Adam steps are the optimizers' own
  ``step()``, as in SB3;
* the Polyak update is two multi-tensor ops (the same ``mul_`` then ``add_`` as SB3's ``polyak_update``);
* losses and coefficients are accumulated as tensors and read once at the end of the call.
"""

from collections.abc import Callable
from functools import partial
from typing import Protocol

import torch as th
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.distributions import SquashedDiagGaussianDistribution
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from stable_baselines3.common.vec_env import VecNormalize
from stable_baselines3.sac import SAC
from stable_baselines3.sac.policies import Actor
from torch.nn import functional as F

from sb3_tom.kernels import fast_kernels, polyak_update
from sb3_tom.mbpo.mlp_sac import MLPSACStep, mlp_sac_supported
from sb3_tom.mbpo.squashed_gaussian import squashed_gaussian_sample


class BatchSource(Protocol):
    """Anything with SB3's replay-buffer ``sample`` signature."""

    def sample(self, batch_size: int, env: VecNormalize | None = None) -> ReplayBufferSamples: ...


def sample_batches(
    buffer: BatchSource, n_batches: int, batch_size: int, env: VecNormalize | None = None
) -> list[ReplayBufferSamples]:
    """
    Draw ``n_batches`` independent batches of ``batch_size`` transitions in one go.

    Uses ``buffer.sample_many(n_batches, batch_size, env)`` when the buffer has it (it must return
    ``ReplayBufferSamples`` whose tensors have a leading ``n_batches`` axis). A plain SB3 ``ReplayBuffer`` (whose
    ``sample`` draws indices i.i.d. uniformly) is sampled once for ``n_batches * batch_size`` transitions; any
    other buffer is sampled batch by batch.

    :return: One ``ReplayBufferSamples`` per batch.
    """
    sample_many = getattr(buffer, "sample_many", None)
    if sample_many is not None:
        stacked = sample_many(n_batches, batch_size, env)
    elif type(buffer) is ReplayBuffer:
        flat = buffer.sample(n_batches * batch_size, env)
        stacked = ReplayBufferSamples(*(t.reshape(n_batches, batch_size, *t.shape[1:]) for t in flat[:5]))
    else:
        return [buffer.sample(batch_size, env) for _ in range(n_batches)]
    return [ReplayBufferSamples(*(t[i] for t in stacked[:5])) for i in range(n_batches)]


def squashed_gaussian_action_log_prob(actor: Actor, obs: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
    """
    ``actor.action_log_prob(obs)`` of an SB3 SAC ``Actor`` without gSDE, computed directly.

    Same operations as ``SquashedDiagGaussianDistribution.log_prob_from_params`` (reparameterised sample
    ``mean + eps * std`` with ``eps`` drawn like ``Normal.rsample``, Gaussian log-density, tanh correction),
    without constructing a (validated) ``torch.distributions.Normal``.

    :return: Squashed actions ``(batch, action_dim)`` and log-probabilities ``(batch,)``.
    """
    features = actor.extract_features(obs, actor.features_extractor)
    latent = actor.latent_pi(features)
    epsilon = actor.action_dist.epsilon  # type: ignore[union-attr]
    sample = squashed_gaussian_sample(actor.mu(latent), actor.log_std(latent), epsilon)  # type: ignore[operator]
    return sample.actions, sample.log_prob


def fast_sac_train(
    model: SAC, gradient_steps: int, batch_size: int, buffer: BatchSource | None = None, hand_written: bool = True
) -> None:
    """
    ``gradient_steps`` SAC updates of ``model``, computing what ``SAC.train(gradient_steps, batch_size)`` computes.

    Logs the same ``train/`` keys and advances ``model._n_updates`` like ``SAC.train``.

    :param model: The SAC (or subclass) agent; its policy's modules and optimizers are updated in place.
    :param gradient_steps: Number of gradient steps.
    :param batch_size: Minibatch size.
    :param buffer: Where batches come from (default: ``model.replay_buffer``); see :func:`sample_batches`.
    :param hand_written: Use the hand-differentiated step of :mod:`sb3_tom.mbpo.mlp_sac` when the policy is SB3's
        MLP family (:func:`~sb3_tom.mbpo.mlp_sac.mlp_sac_supported`) and the fast kernels are on
        (:func:`~sb3_tom.kernels.fast_kernels`); otherwise, or if False, autograd.
    """
    if buffer is None:
        assert model.replay_buffer is not None
        buffer = model.replay_buffer
    model.policy.set_training_mode(True)
    optimizers = [model.actor.optimizer, model.critic.optimizer]
    if model.ent_coef_optimizer is not None:
        optimizers.append(model.ent_coef_optimizer)
    model._update_learning_rate(optimizers)

    step: Callable[[ReplayBufferSamples], tuple[th.Tensor, th.Tensor, th.Tensor]]
    if hand_written and fast_kernels() and mlp_sac_supported(model):
        step = MLPSACStep(model)
    else:
        step = AutogradSACStep(model)
    critic_params: list[th.Tensor] = list(model.critic.parameters())
    target_params: list[th.Tensor] = list(model.critic_target.parameters())
    bn_params: list[th.Tensor] = list(model.batch_norm_stats)
    bn_target: list[th.Tensor] = list(model.batch_norm_stats_target)
    tau = model.tau

    batches = sample_batches(buffer, gradient_steps, batch_size, model._vec_normalize_env)
    ent_coefs: list[th.Tensor] = []
    actor_losses: list[th.Tensor] = []
    critic_losses: list[th.Tensor] = []

    for gradient_step, replay_data in enumerate(batches):
        critic_loss, actor_loss, ent_coef = step(replay_data)
        critic_losses.append(critic_loss.detach())
        actor_losses.append(actor_loss.detach())
        ent_coefs.append(ent_coef.detach().reshape(()))
        if gradient_step % model.target_update_interval == 0:
            polyak_update(target_params, critic_params, tau)
            if bn_params:
                polyak_update(bn_target, bn_params, 1.0)

    model._n_updates += gradient_steps
    logger = model.logger
    logger.record("train/n_updates", model._n_updates, exclude="tensorboard")
    logger.record("train/ent_coef", _mean(ent_coefs))
    logger.record("train/actor_loss", _mean(actor_losses))
    logger.record("train/critic_loss", _mean(critic_losses))
    if step.ent_coef_losses:
        logger.record("train/ent_coef_loss", _mean(step.ent_coef_losses))


class AutogradSACStep:
    """
    One SAC gradient step per call with autograd, for any SAC policy (gSDE, other feature extractors or activations):
    SB3's ``SAC.train`` body, minus the work whose result it discards.

    :param model: The SAC agent.
    """

    def __init__(self, model: SAC) -> None:
        self.model = model
        actor = model.actor
        self.action_log_prob: Callable[[th.Tensor], tuple[th.Tensor, th.Tensor]]
        if type(actor.action_dist) is SquashedDiagGaussianDistribution and not actor.use_sde:
            self.action_log_prob = partial(squashed_gaussian_action_log_prob, actor)
        else:
            self.action_log_prob = actor.action_log_prob
        self.actor_params = [p for group in actor.optimizer.param_groups for p in group["params"] if p.requires_grad]
        self.ent_coef_losses: list[th.Tensor] = []

    def __call__(self, replay_data: ReplayBufferSamples) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """One gradient step on ``replay_data``; returns the critic loss, the actor loss and the entropy coefficient."""
        model = self.model
        actor, critic = model.actor, model.critic
        ent_coef_optimizer, log_ent_coef = model.ent_coef_optimizer, model.log_ent_coef
        discounts = replay_data.discounts if replay_data.discounts is not None else model.gamma
        if model.use_sde:
            actor.reset_noise()
        actions_pi, log_prob = self.action_log_prob(replay_data.observations)
        log_prob = log_prob.reshape(-1, 1)

        if ent_coef_optimizer is not None and log_ent_coef is not None:
            ent_coef = th.exp(log_ent_coef.detach())
            assert isinstance(model.target_entropy, float)
            ent_coef_loss = -(log_ent_coef * (log_prob + model.target_entropy).detach()).mean()
            self.ent_coef_losses.append(ent_coef_loss.detach())
            ent_coef_optimizer.zero_grad()
            ent_coef_loss.backward()
            ent_coef_optimizer.step()
        else:
            ent_coef = model.ent_coef_tensor

        with th.no_grad():
            next_actions, next_log_prob = self.action_log_prob(replay_data.next_observations)
            next_q_values = th.cat(model.critic_target(replay_data.next_observations, next_actions), dim=1)
            next_q_values, _ = th.min(next_q_values, dim=1, keepdim=True)
            next_q_values = next_q_values - ent_coef * next_log_prob.reshape(-1, 1)
            target_q_values = replay_data.rewards + (1 - replay_data.dones) * discounts * next_q_values

        current_q_values = critic(replay_data.observations, replay_data.actions)
        critic_loss = 0.5 * sum(F.mse_loss(current_q, target_q_values) for current_q in current_q_values)
        assert isinstance(critic_loss, th.Tensor)
        critic.optimizer.zero_grad()
        critic_loss.backward()
        critic.optimizer.step()

        q_values_pi = th.cat(critic(replay_data.observations, actions_pi), dim=1)
        min_qf_pi, _ = th.min(q_values_pi, dim=1, keepdim=True)
        actor_loss = (ent_coef * log_prob - min_qf_pi).mean()
        actor.optimizer.zero_grad()
        # Only the actor's gradients are used: skip the critic weight gradients SB3 computes and discards
        actor_loss.backward(inputs=self.actor_params)
        actor.optimizer.step()
        return critic_loss, actor_loss, ent_coef


def _mean(values: list[th.Tensor]) -> float:
    return float(th.stack(values).double().mean()) if values else float("nan")
