"""MBPO_TOM: MBPO whose dynamics model is learned by TOM (Transition Occupancy Matching)."""

import inspect
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.type_aliases import GymEnv, Schedule
from stable_baselines3.sac.policies import SACPolicy

from sb3_tom import tuning
from sb3_tom.buffers import Transitions, real_buffer_size, recent_mask
from sb3_tom.dynamics.termination import TerminationFn
from sb3_tom.mbpo.mbpo import MBPO
from sb3_tom.mbpo.schedule import RolloutLength
from sb3_tom.tom.discriminator import TransitionDiscriminator, make_discriminator_optimizer, train_discriminator
from sb3_tom.tom.divergence import F_DIVERGENCES
from sb3_tom.tom.dual import DualTrainer, DualValue, residuals
from sb3_tom.tom.start_states import episode_start_mask
from sb3_tom.tom.weights import (
    clip_weights,
    weight_statistics,
)

WEIGHT_MODES = ("weighted_nll", "resample")
#: MBPO's constructor arguments: MBPO_TOM repeats them in its signature (types and defaults for IDEs and ``help``)
#: and hands them on as given
_MBPO_ARGUMENTS = frozenset(inspect.signature(MBPO.__init__).parameters) - {"self"}


class MBPO_TOM(MBPO):
    """
    MBPO with TOM's policy-aware model learning (Ma et al., L4DC 2023).

    Each model round (once the policy has collected ``policy_buffer_size`` transitions after the initial exploration;
    before that, plain maximum likelihood):
    a discriminator separates the most recent ``policy_buffer_size`` transitions (the current policy's footprint)
    from the whole replay buffer, its logit serving as the log-ratio reward ``r(s, a, s')``; a dual network
    ``Q(s, a)`` is trained on ``(1-γ) E_{μ0,π}[Q] + E_D[f*(r + γ Q(s', a') - Q(s, a))]``; the importance weight of
    every stored transition is ``w = f*'(e)``, normalised to mean 1 over the buffer and clipped; the ensemble is then
    fit by weighted maximum likelihood and rollouts start from states drawn ∝ ``w``. Everything else is MBPO.

    Paper: https://arxiv.org/abs/2305.12663

    :param policy: The policy model to use (only ``"MlpPolicy"`` / SAC's ``MlpPolicy``).
    :param env: The environment to learn from (if registered in Gym, can be str). Single environment,
        ``Box`` observations of any shape (the model works on the flattened vector, as SAC's ``MlpPolicy`` does) and
        ``Box`` actions.
    :param learning_rate: SAC learning rate (actor, critics, entropy coefficient); can be a schedule.
    :param buffer_size: Size of the real replay buffer.
    :param learning_starts: Steps of initial (random-policy) exploration before model and policy training.
    :param batch_size: SAC minibatch size.
    :param tau: Soft update coefficient of the target critics.
    :param gamma: Discount factor.
    :param train_freq: Update the policy every ``train_freq`` steps (SB3 semantics).
    :param gradient_steps: SAC gradient steps per environment step (``G``).
    :param action_noise: Action noise for exploration (SB3 semantics).
    :param replay_buffer_class: Replay buffer class for the real data (must be an SB3 ``ReplayBuffer``).
    :param replay_buffer_kwargs: Keyword arguments of the replay buffer.
    :param ent_coef: Entropy coefficient (``"auto"`` to learn it, as SAC).
    :param target_update_interval: Target network update interval in gradient steps.
    :param target_entropy: Target entropy when learning ``ent_coef``.
    :param use_sde: Generalized State Dependent Exploration (as SAC).
    :param sde_sample_freq: gSDE noise resampling frequency.
    :param use_sde_at_warmup: Use gSDE during the warm up phase.
    :param model_train_freq: Retrain the dynamics model (and refill the model buffer) every this many env steps.
    :param rollout_batch_size: Number of start states of the branched rollouts of each round.
    :param rollout_length: Model rollout length ``k``: an int, or a schedule
        ``[epoch_start, epoch_end, k_min, k_max]`` over epochs of ``epoch_length`` env steps.
    :param model_retain_epochs: Number of epochs of model rollouts kept in the model buffer.
    :param real_ratio: Fraction of real transitions in each SAC batch.
    :param epoch_length: Env steps per epoch (for the rollout schedule and the model buffer capacity).
    :param ensemble_size: Number of members of the dynamics ensemble.
    :param num_elites: Number of elite members used for rollouts.
    :param dynamics_hidden_sizes: Hidden layer sizes of each ensemble member.
    :param dynamics_learning_rate: Adam learning rate of the ensemble.
    :param dynamics_weight_decays: L2 coefficient of each ensemble layer (MBPO's values for 4 hidden layers).
    :param dynamics_batch_size: Minibatch size of ensemble training.
    :param model_holdout_ratio: Fraction of the real data held out for early stopping.
    :param model_max_holdout: Maximum number of holdout transitions.
    :param model_patience: Stop ensemble training after more than this many epochs without a 1% holdout improvement
        (MBPO: the first epoch of every round counts as an improvement).
    :param model_max_epochs: Optional cap on ensemble training epochs per round (None: early stopping only).
    :param termination_fn: ``(obs, action, next_obs) -> bool tensor`` terminal function for model rollouts.
        If None it is chosen from the env id; for an unknown env, rollouts never terminate until a terminal
        transition is seen, then a classifier learned on the real buffer predicts terminals.
    :param fast_update: Use the fast SAC update of :func:`~sb3_tom.mbpo.fast_sac.fast_sac_train` (same maths as SB3's
        ``SAC.train``, gradients written out for MLP policies, oneDNN matmuls on AVX-512 CPUs); False uses SB3's
        ``SAC.train``.
    :param stats_window_size: Window size for the rollout logging.
    :param tensorboard_log: The log location for tensorboard (if None, no logging).
    :param policy_kwargs: Additional arguments passed to the policy on creation.
    :param verbose: Verbosity level: 0 no output, 1 info messages, 2 debug messages.
    :param seed: Seed for the pseudo random generators.
    :param device: Device on which the code should run ("auto", "cpu", "cuda", ...).
    :param policy_buffer_size: Number of most recent real transitions taken as the current policy's footprint.
    :param f_divergence: ``"chi"`` (chi-square, ``w = relu(e + 1)``) or ``"kl"`` (``w = exp(e)``, computed stably).
    :param use_discriminator: Learn ``r`` with the discriminator; if False, ``r = 1`` on the recent window and 0
        elsewhere (the paper's no-discriminator variant).
    :param discriminator_steps: Discriminator gradient steps per round (re-initialised every round).
    :param discriminator_learning_rate: Adam learning rate of the discriminator.
    :param discriminator_batch_size: Positives and negatives per discriminator batch.
    :param discriminator_gradient_penalty: Coefficient of the gradient penalty on interpolates.
    :param discriminator_soft_label: Label of the buffer (negative) samples.
    :param official_discriminator: Reproduce the official code's discriminator: only its head is trained and inputs
        are not standardised (default False: all parameters trained on standardised inputs).
    :param dual_steps: Dual gradient steps per round (the dual network is kept across rounds).
    :param dual_learning_rate: Adam learning rate of the dual network.
    :param dual_weight_decay: Adam weight decay of the dual network.
    :param dual_batch_size: Batch size of the dual training.
    :param dual_hidden_sizes: Hidden sizes of the dual network.
    :param dual_gamma: Discount of the occupancy measures in the dual problem (None: ``gamma``).
    :param weight_clip: Clip of the normalised weights (None: no clipping).
    :param weight_mode: ``"weighted_nll"``: per-sample weighted NLL with normalised, clipped weights; ``"resample"``:
        the official code's scheme: a 10% holdout is drawn first and its error weighted by ``min(raw w, weight_clip)``,
        and every epoch's 100 training minibatches are drawn from the rest ∝ ``min(raw w, weight_clip)`` (plain NLL,
        at most 30 epochs).
    :param weighted_start_states: Draw rollout start states ∝ the weights (not in the paper's Algorithm 1).
    :param clip_start_state_weights: Draw them ∝ the weights clipped at ``weight_clip`` (those of ``"weighted_nll"``);
        False: ∝ the unclipped weights, as the official code.
    :param _init_setup_model: Whether or not to build the network at the creation of the instance.
    """

    def __init__(
        self,
        policy: str | type[SACPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 3e-4,
        buffer_size: int = 1_000_000,
        learning_starts: int = 5000,
        batch_size: int = 256,
        tau: float = 0.005,
        gamma: float = 0.99,
        train_freq: int | tuple[int, str] = 1,
        gradient_steps: int = 20,
        action_noise: ActionNoise | None = None,
        replay_buffer_class: type[ReplayBuffer] | None = None,
        replay_buffer_kwargs: dict[str, Any] | None = None,
        ent_coef: str | float = "auto",
        target_update_interval: int = 1,
        target_entropy: str | float = "auto",
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        use_sde_at_warmup: bool = False,
        model_train_freq: int = 250,
        rollout_batch_size: int = 100_000,
        rollout_length: RolloutLength = 1,
        model_retain_epochs: int = 1,
        real_ratio: float = 0.05,
        epoch_length: int = 1000,
        ensemble_size: int = 7,
        num_elites: int = 5,
        dynamics_hidden_sizes: Sequence[int] = (200, 200, 200, 200),
        dynamics_learning_rate: float = 1e-3,
        dynamics_weight_decays: Sequence[float] | None = None,
        dynamics_batch_size: int = 256,
        model_holdout_ratio: float = 0.2,
        model_max_holdout: int = 5000,
        model_patience: int = 5,
        model_max_epochs: int | None = None,
        termination_fn: TerminationFn | None = None,
        fast_update: bool = True,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        policy_buffer_size: int = 1000,
        f_divergence: str = "chi",
        use_discriminator: bool = True,
        discriminator_steps: int = 400,
        discriminator_learning_rate: float = 3e-4,
        discriminator_batch_size: int = 256,
        discriminator_gradient_penalty: float = 10.0,
        discriminator_soft_label: float = 0.1,
        official_discriminator: bool = False,
        dual_steps: int = 1000,
        dual_learning_rate: float = 3e-4,
        dual_weight_decay: float = 1e-4,
        dual_batch_size: int = 256,
        dual_hidden_sizes: tuple[int, ...] | list[int] = (256, 256),
        dual_gamma: float | None = None,
        weight_clip: float | None = 10.0,
        weight_mode: str = "weighted_nll",
        weighted_start_states: bool = True,
        clip_start_state_weights: bool = True,
        _init_setup_model: bool = True,
    ) -> None:
        self.policy_buffer_size = policy_buffer_size
        self.f_divergence = f_divergence
        self.use_discriminator = use_discriminator
        self.discriminator_steps = discriminator_steps
        self.discriminator_learning_rate = discriminator_learning_rate
        self.discriminator_batch_size = discriminator_batch_size
        self.discriminator_gradient_penalty = discriminator_gradient_penalty
        self.discriminator_soft_label = discriminator_soft_label
        self.official_discriminator = official_discriminator
        self.dual_steps = dual_steps
        self.dual_learning_rate = dual_learning_rate
        self.dual_weight_decay = dual_weight_decay
        self.dual_batch_size = dual_batch_size
        self.dual_hidden_sizes = list(dual_hidden_sizes)
        self.dual_gamma = dual_gamma
        self.weight_clip = weight_clip
        self.weight_mode = weight_mode
        self.weighted_start_states = weighted_start_states
        self.clip_start_state_weights = clip_start_state_weights
        self._weight_reference: float | None = None
        self._validate_tom_hyperparameters()
        super().__init__(**{name: value for name, value in locals().items() if name in _MBPO_ARGUMENTS})

    def _validate_tom_hyperparameters(self) -> None:
        require = self._require

        require(self.policy_buffer_size >= 1, f"policy_buffer_size must be >= 1, got {self.policy_buffer_size}.")
        require(
            self.f_divergence in F_DIVERGENCES,
            f"f_divergence must be one of {tuple(F_DIVERGENCES)}, got {self.f_divergence!r}.",
        )
        require(self.weight_mode in WEIGHT_MODES, f"weight_mode must be one of {WEIGHT_MODES}, got {self.weight_mode!r}.")
        require(self.weight_clip is None or self.weight_clip > 0, f"weight_clip must be > 0 or None, got {self.weight_clip}.")
        require(self.discriminator_steps >= 0, f"discriminator_steps must be >= 0, got {self.discriminator_steps}.")
        require(self.dual_steps >= 0, f"dual_steps must be >= 0, got {self.dual_steps}.")
        require(0.0 <= self.discriminator_soft_label < 1.0, "discriminator_soft_label must be in [0, 1).")
        require(self.discriminator_gradient_penalty >= 0, "discriminator_gradient_penalty must be >= 0.")
        require(self.discriminator_batch_size >= 1 and self.dual_batch_size >= 1, "batch sizes must be >= 1.")
        require(self.discriminator_learning_rate > 0 and self.dual_learning_rate > 0, "learning rates must be > 0.")
        require(
            self.dual_gamma is None or 0.0 <= self.dual_gamma < 1.0, f"dual_gamma must be in [0, 1), got {self.dual_gamma}."
        )

    def _setup_model(self) -> None:
        super()._setup_model()
        self._new_discriminator()
        self.dual = DualValue(self.obs_dim, self.action_dim, tuple(self.dual_hidden_sizes)).to(self.device)
        self.dual_trainer = DualTrainer(
            self.dual,
            f_divergence=self.f_divergence,
            gamma=self.gamma if self.dual_gamma is None else self.dual_gamma,
            learning_rate=self.dual_learning_rate,
            weight_decay=self.dual_weight_decay,
            batch_size=self.dual_batch_size,
        )

    def _new_discriminator(self) -> None:
        self.discriminator = TransitionDiscriminator(
            self.obs_dim, self.action_dim, standardize_inputs=not self.official_discriminator
        ).to(self.device)
        self.discriminator_optimizer = make_discriminator_optimizer(
            self.discriminator, self.discriminator_learning_rate, head_only=self.official_discriminator
        )

    @property
    def dual_optimizer(self) -> th.optim.Optimizer:
        """Adam optimiser of the dual network."""
        return self.dual_trainer.optimizer

    # ------------------------------------------------------------------ the hook
    @property
    def tom_active(self) -> bool:
        """
        Whether the next model round uses TOM: once the current-policy pool is full, i.e. ``policy_buffer_size``
        transitions were collected by the policy after the initial random exploration (as the reference; before that,
        plain maximum likelihood), and the replay buffer holds more than that pool.
        """
        assert self.replay_buffer is not None
        n_real = real_buffer_size(self.replay_buffer)
        return self.num_timesteps - self.learning_starts >= self.policy_buffer_size and n_real > self.policy_buffer_size

    def _episode_start_mask(self, data: Transitions) -> th.Tensor:
        """Episode starts of the chronological real data (the oldest row only while the buffer has not wrapped)."""
        assert self.replay_buffer is not None
        return episode_start_mask(data, first_row_is_start=not self.replay_buffer.full)

    def _learn_model(self, data: Transitions) -> th.Tensor | None:
        if not self.tom_active:
            self.logger.record("tom/active", 0)
            return super()._learn_model(data)
        recent = recent_mask(len(data), self.policy_buffer_size, self.device)
        start_time = time.perf_counter()
        if self.use_discriminator:
            self._train_discriminator(data, recent)
        log_ratio = self._log_ratio(data, recent)
        dual_start_time = time.perf_counter()
        start_obs = data.observations[self._episode_start_mask(data)]
        dual_loss = self.dual_trainer.train(data, log_ratio, start_obs, self._sample_actions, self.dual_steps)
        e = self._residuals(data, log_ratio)
        self.logger.record("tom/discriminator_seconds", dual_start_time - start_time)
        self.logger.record("tom/dual_seconds", time.perf_counter() - dual_start_time)
        divergence = self.dual_trainer.divergence
        reference = divergence.reference(e)
        raw = divergence.weights(e)
        if divergence.is_degenerate(reference):
            # Degenerate dual solution (all weights zero): fall back to maximum likelihood for this round
            self.logger.record("tom/degenerate_round", 1)
            self.logger.record("tom/active", 0)
            return super()._learn_model(data)
        self._weight_reference = reference
        normalized = divergence.normalized(e, reference)
        # the official scheme (``"resample"``) clips the raw weights, never normalised
        unclipped = normalized if self.weight_mode == "weighted_nll" else raw
        weights = clip_weights(unclipped, self.weight_clip)

        self.logger.record("tom/active", 1)
        self.logger.record("tom/dual_loss", dual_loss)
        for key, value in weight_statistics(raw, unclipped, weights, self.weight_clip, recent).items():
            self.logger.record(f"tom/{key}", value)

        # resample: the holdout is drawn first, every epoch's minibatches ∝ the weights (the official scheme)
        self._fit_dynamics(data, sample_weight=weights, resample=self.weight_mode == "resample")
        if not self.weighted_start_states:
            return None
        return clip_weights(normalized, self.weight_clip) if self.clip_start_state_weights else normalized

    def _train_discriminator(self, data: Transitions, recent: th.Tensor) -> None:
        """A new discriminator, trained to tell the ``recent`` transitions of ``data`` from all of them."""
        self._new_discriminator()
        inputs = TransitionDiscriminator.inputs(data)
        stats = train_discriminator(
            self.discriminator,
            inputs[recent],
            inputs,
            self.discriminator_optimizer,
            n_steps=self.discriminator_steps,
            batch_size=self.discriminator_batch_size,
            gradient_penalty=self.discriminator_gradient_penalty,
            soft_label=self.discriminator_soft_label,
        )
        self.logger.record("tom/discriminator_loss", stats.loss)
        self.logger.record("tom/discriminator_accuracy", stats.accuracy)

    @th.no_grad()
    def _log_ratio(self, data: Transitions, recent: th.Tensor) -> th.Tensor:
        """
        ``r(s, a, s')`` of every transition of ``data``: the current discriminator's logit, or without the
        discriminator the indicator of the recent window ``recent``.
        """
        if not self.use_discriminator:
            return recent.float()
        inputs = TransitionDiscriminator.inputs(data)
        return th.cat([self.discriminator(chunk) for chunk in inputs.split(tuning.RESIDUAL_CHUNK_ROWS)])

    @th.no_grad()
    def _residuals(self, data: Transitions, log_ratio: th.Tensor) -> th.Tensor:
        """Dual residuals ``e`` of every transition, in chunks (one action sample of the policy per ``s'``)."""
        out = []
        for start in range(0, len(data), tuning.RESIDUAL_CHUNK_ROWS):
            idx = th.arange(start, min(start + tuning.RESIDUAL_CHUNK_ROWS, len(data)), device=self.device)
            batch = data.index(idx)
            next_actions = self._sample_actions(batch.next_observations)
            out.append(residuals(self.dual, batch, log_ratio[idx], next_actions, self.dual_trainer.gamma))
        return th.cat(out)

    # ------------------------------------------------------------------ public diagnostics
    def transition_weights(
        self,
        observations: np.ndarray,
        actions: np.ndarray,
        next_observations: np.ndarray,
        terminated: np.ndarray,
        clip: bool = False,
        seed: int = 0,
    ) -> np.ndarray:
        """
        TOM importance weights of arbitrary transitions under the current discriminator, dual network and policy,
        normalised so that their mean over the real replay buffer is 1 (the normaliser of the last model round
        when the replay buffer is empty, e.g. after ``load`` without ``load_replay_buffer``).

        The policy's next actions are sampled with a fixed ``seed`` (the global RNG is left untouched), so the
        result is deterministic. Without the discriminator, ``r = 0`` for transitions given here (they are not
        known to be recent).

        :param observations: ``(n, obs_dim)``
        :param actions: ``(n, action_dim)`` actions in the policy's scaled ``[-1, 1]`` space (as stored in the buffer).
        :param next_observations: ``(n, obs_dim)``
        :param terminated: ``(n,)`` true terminal flags (not truncations).
        :param clip: Clip the normalised weights at ``weight_clip``: the weights ``"weighted_nll"`` fits the model with
            and rollout starts are drawn from (``"resample"`` fits it with the raw weights clipped instead).
        :param seed: Seed of the policy's action samples.
        :return: Weights of shape ``(n,)``.
        """
        if self._weight_reference is None:
            raise RuntimeError(
                "No TOM round has run yet: TOM starts at the first model round after the policy collected "
                f"policy_buffer_size={self.policy_buffer_size} transitions (after learning_starts={self.learning_starts} "
                "random steps); train for longer first."
            )

        def as_tensor(x: np.ndarray, dim: int) -> th.Tensor:
            return th.as_tensor(np.asarray(x, dtype=np.float32), device=self.device).reshape(-1, dim)

        query = Transitions(
            as_tensor(observations, self.obs_dim),
            as_tensor(actions, self.action_dim),
            th.zeros(len(observations), device=self.device),
            as_tensor(next_observations, self.obs_dim),
            as_tensor(terminated, 1).reshape(-1),
        )
        devices = [self.device] if self.device.type == "cuda" else []
        with th.random.fork_rng(devices=devices):
            th.manual_seed(seed)
            reference = self._weight_reference
            assert self.replay_buffer is not None
            if real_buffer_size(self.replay_buffer) > 0:
                data = self._real_data()
                recent = recent_mask(len(data), self.policy_buffer_size, self.device)
                reference = self.dual_trainer.divergence.reference(self._residuals(data, self._log_ratio(data, recent)))
            th.manual_seed(seed)
            e = self._residuals(query, self._log_ratio(query, th.zeros(len(query), dtype=th.bool, device=self.device)))
        weights = self.dual_trainer.divergence.normalized(e, reference)
        if clip:
            weights = clip_weights(weights, self.weight_clip)
        return weights.cpu().numpy()

    # ------------------------------------------------------------------ save / load
    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "discriminator", "discriminator_optimizer", "dual", "dual_trainer"]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts, variables = super()._get_torch_save_params()
        return [*state_dicts, "discriminator", "discriminator_optimizer", "dual", "dual_trainer.optimizer"], variables
