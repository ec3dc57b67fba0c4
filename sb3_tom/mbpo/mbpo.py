"""MBPO: Model-Based Policy Optimization (Janner et al., 2019) on top of Stable-Baselines3's SAC."""

import time
import warnings
from collections.abc import Sequence
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.base_class import maybe_make_env
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.vec_env import VecEnv, unwrap_vec_normalize
from stable_baselines3.sac import SAC
from stable_baselines3.sac.policies import MlpPolicy, SACPolicy

from sb3_tom import tuning
from sb3_tom.buffers import (
    MixedBatchSampler,
    ModelReplayBuffer,
    Transitions,
    end_last_episode,
    real_buffer_size,
    real_transitions,
)
from sb3_tom.dynamics.ensemble import GaussianEnsemble
from sb3_tom.dynamics.model_env import branched_rollout
from sb3_tom.dynamics.termination import LearnedTermination, TerminationFn, get_termination_fn
from sb3_tom.dynamics.training import EnsembleTrainer, FitResult
from sb3_tom.mbpo.fast_sac import fast_sac_train
from sb3_tom.mbpo.schedule import RolloutLength, rollout_length_at, validate_rollout_length

SelfMBPO = TypeVar("SelfMBPO", bound="MBPO")


def _env_id(env: GymEnv | None) -> str | None:
    """The registered id of a (vectorised) environment, if it has one."""
    if env is None:
        return None
    try:
        spec = env.get_attr("spec", indices=[0])[0] if isinstance(env, VecEnv) else env.spec  # type: ignore[union-attr]
    except AttributeError:
        return None
    return getattr(spec, "id", None)


class MBPO(SAC):
    """
    Model-Based Policy Optimization (MBPO).

    SAC trained mostly on short branched rollouts of a learned probabilistic dynamics ensemble. Every
    ``model_train_freq`` environment steps the ensemble is retrained on the real replay buffer, then
    ``rollout_batch_size`` start states are drawn from the real buffer and rolled ``k`` steps with the current
    policy into the model buffer. Each SAC batch mixes ``int(real_ratio * batch_size)`` real transitions with
    model transitions.

    Paper: https://arxiv.org/abs/1906.08253

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
    :param _init_setup_model: Whether or not to build the network at the creation of the instance.
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"MlpPolicy": MlpPolicy}

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
        _init_setup_model: bool = True,
    ) -> None:
        if isinstance(policy, str) and policy not in self.policy_aliases:
            raise ValueError(
                f"Policy {policy!r} is not supported by {type(self).__name__}: use 'MlpPolicy' "
                "(Box observations; wrap Dict observations with gymnasium.wrappers.FlattenObservation)."
            )
        if env is not None:
            env = maybe_make_env(env, verbose)
            self._check_env(env)
        self.env_id = _env_id(env)
        self.model_train_freq = model_train_freq
        self.rollout_batch_size = rollout_batch_size
        self.rollout_length = list(rollout_length) if not isinstance(rollout_length, int) else rollout_length
        self.model_retain_epochs = model_retain_epochs
        self.real_ratio = real_ratio
        self.epoch_length = epoch_length
        self.ensemble_size = ensemble_size
        self.num_elites = num_elites
        self.dynamics_hidden_sizes = list(dynamics_hidden_sizes)
        self.dynamics_learning_rate = dynamics_learning_rate
        self.dynamics_weight_decays = None if dynamics_weight_decays is None else list(dynamics_weight_decays)
        self.dynamics_batch_size = dynamics_batch_size
        self.model_holdout_ratio = model_holdout_ratio
        self.model_max_holdout = model_max_holdout
        self.model_patience = model_patience
        self.model_max_epochs = model_max_epochs
        self.termination_fn = termination_fn
        self.fast_update = fast_update
        self._last_model_train_step = -1
        self._validate_hyperparameters(batch_size=batch_size, gradient_steps=gradient_steps, learning_starts=learning_starts)

        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            buffer_size=buffer_size,
            learning_starts=learning_starts,
            batch_size=batch_size,
            tau=tau,
            gamma=gamma,
            train_freq=train_freq,
            gradient_steps=gradient_steps,
            action_noise=action_noise,
            replay_buffer_class=replay_buffer_class,
            replay_buffer_kwargs=replay_buffer_kwargs,
            ent_coef=ent_coef,
            target_update_interval=target_update_interval,
            target_entropy=target_entropy,
            use_sde=use_sde,
            sde_sample_freq=sde_sample_freq,
            use_sde_at_warmup=use_sde_at_warmup,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=False,
        )
        if _init_setup_model:
            self._setup_model()

    # ------------------------------------------------------------------ validation
    def _require(self, condition: bool, message: str) -> None:
        """Raise a ``ValueError`` naming this algorithm if a hyperparameter check fails."""
        if not condition:
            raise ValueError(f"{type(self).__name__}: {message}")

    def _validate_hyperparameters(self, batch_size: int, gradient_steps: int, learning_starts: int) -> None:
        require = self._require
        require(self.model_train_freq >= 1, f"model_train_freq must be >= 1, got {self.model_train_freq}.")
        require(self.rollout_batch_size >= 1, f"rollout_batch_size must be >= 1, got {self.rollout_batch_size}.")
        validate_rollout_length(self.rollout_length)
        require(self.model_retain_epochs >= 1, f"model_retain_epochs must be >= 1, got {self.model_retain_epochs}.")
        require(0.0 <= self.real_ratio <= 1.0, f"real_ratio must be in [0, 1], got {self.real_ratio}.")
        require(self.epoch_length >= 1, f"epoch_length must be >= 1, got {self.epoch_length}.")
        require(self.ensemble_size >= 1, f"ensemble_size must be >= 1, got {self.ensemble_size}.")
        require(
            1 <= self.num_elites <= self.ensemble_size,
            f"num_elites must be between 1 and ensemble_size={self.ensemble_size}, got {self.num_elites}.",
        )
        require(
            len(self.dynamics_hidden_sizes) >= 1 and all(int(h) >= 1 for h in self.dynamics_hidden_sizes),
            f"dynamics_hidden_sizes must be a non-empty list of positive ints, got {self.dynamics_hidden_sizes}.",
        )
        require(self.dynamics_learning_rate > 0, f"dynamics_learning_rate must be > 0, got {self.dynamics_learning_rate}.")
        require(self.dynamics_batch_size >= 1, f"dynamics_batch_size must be >= 1, got {self.dynamics_batch_size}.")
        require(
            0.0 <= self.model_holdout_ratio < 1.0, f"model_holdout_ratio must be in [0, 1), got {self.model_holdout_ratio}."
        )
        require(self.model_patience >= 1, f"model_patience must be >= 1, got {self.model_patience}.")
        require(
            self.model_max_epochs is None or self.model_max_epochs >= 1,
            f"model_max_epochs must be None or >= 1, got {self.model_max_epochs}.",
        )
        require(batch_size >= 1, f"batch_size must be >= 1, got {batch_size}.")
        require(gradient_steps >= 1, f"gradient_steps must be >= 1 (use SAC for other settings), got {gradient_steps}.")
        require(learning_starts >= 1, f"learning_starts must be >= 1 (the model needs real data), got {learning_starts}.")
        require(
            self.termination_fn is None or callable(self.termination_fn),
            "termination_fn must be a callable (obs, action, next_obs) -> bool tensor.",
        )

    def _check_env(self, env: GymEnv) -> None:
        name = type(self).__name__
        if isinstance(env, VecEnv) and env.num_envs != 1:
            raise ValueError(f"{name} supports a single environment (n_envs=1), got {env.num_envs}.")
        if not isinstance(env.action_space, spaces.Box):
            raise ValueError(
                f"{name} needs continuous (Box) actions, got {env.action_space}. "
                "For discrete actions use a model-free algorithm such as DQN or PPO."
            )
        obs_space = env.observation_space
        if isinstance(obs_space, spaces.Dict):
            raise ValueError(
                f"{name} needs Box observations, got a Dict space. Wrap the env with gymnasium.wrappers.FlattenObservation."
            )
        if not isinstance(obs_space, spaces.Box) or is_image_space(obs_space):
            raise ValueError(
                f"{name} needs Box observations (any shape, flattened for the model as SAC's MlpPolicy does), got "
                f"{obs_space}. Image observations are not supported: learn from state vectors, or encode the "
                "observation with a wrapper."
            )
        if isinstance(env, VecEnv) and unwrap_vec_normalize(env) is not None:
            raise ValueError(f"{name} does not support VecNormalize: the dynamics model normalises its own inputs.")

    # ------------------------------------------------------------------ setup
    def _setup_model(self) -> None:
        super()._setup_model()
        assert self.observation_space.shape is not None and self.action_space.shape is not None
        self.obs_dim = int(np.prod(self.observation_space.shape))
        self.action_dim = int(np.prod(self.action_space.shape))
        self._new_dynamics()
        self.model_buffer = ModelReplayBuffer(
            self._model_buffer_capacity(self.current_rollout_length),
            self.obs_dim,
            self.action_dim,
            self.device,
        )
        self._learned_termination: LearnedTermination | None = None
        termination = self.termination_fn
        if termination is None and self.env_id is not None:
            termination = get_termination_fn(self.env_id)
        if termination is None:
            self._learned_termination = LearnedTermination(self.obs_dim, self.action_dim, device=self.device)
            termination = self._learned_termination
            if self.verbose >= 1:
                where = "this environment" if self.env_id is None else f"env {self.env_id!r}"
                print(
                    f"No termination function known for {where}: model rollouts never terminate until a "
                    "terminal transition is seen, then a learned termination classifier is used. "
                    "Pass termination_fn= to set one."
                )
        self._termination: TerminationFn = termination
        self._warned_small_buffer = False

    def _new_dynamics(self) -> None:
        """A freshly initialised dynamics ensemble and its trainer (with a new optimiser)."""
        self.dynamics = GaussianEnsemble(
            self.obs_dim,
            self.action_dim,
            ensemble_size=self.ensemble_size,
            num_elites=self.num_elites,
            hidden_sizes=self.dynamics_hidden_sizes,
            weight_decays=self.dynamics_weight_decays,
        ).to(self.device)
        self.dynamics_trainer = EnsembleTrainer(
            self.dynamics,
            learning_rate=self.dynamics_learning_rate,
            batch_size=self.dynamics_batch_size,
            holdout_ratio=self.model_holdout_ratio,
            max_holdout=self.model_max_holdout,
            patience=self.model_patience,
            max_epochs=self.model_max_epochs,
        )

    @property
    def dynamics_optimizer(self) -> th.optim.Optimizer:
        """Adam optimiser of the dynamics ensemble."""
        return self.dynamics_trainer.optimizer

    def _model_buffer_capacity(self, rollout_length: int) -> int:
        """MBPO's model pool size: ``model_retain_epochs`` epochs of rollouts of length ``rollout_length``."""
        steps_per_epoch = int(rollout_length * self.rollout_batch_size * self.epoch_length / self.model_train_freq)
        return max(self.model_retain_epochs * steps_per_epoch, 1)

    @property
    def epoch(self) -> int:
        """
        MBPO's epoch counter: whole epochs of ``epoch_length`` env steps since the initial exploration
        (``learning_starts`` steps do not count), the ``x`` of the rollout-length schedule.
        """
        return max(self.num_timesteps - self.learning_starts, 0) // self.epoch_length

    @property
    def current_rollout_length(self) -> int:
        """Rollout length ``k`` at the current epoch."""
        return rollout_length_at(self.rollout_length, self.epoch)

    # ------------------------------------------------------------------ data checks
    def _store_transition(
        self,
        replay_buffer: ReplayBuffer,
        buffer_action: np.ndarray,
        new_obs: np.ndarray | dict[str, np.ndarray],
        reward: np.ndarray,
        dones: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        if not (np.all(np.isfinite(new_obs)) and np.all(np.isfinite(reward))):  # type: ignore[arg-type]
            raise ValueError(
                f"The environment returned a non-finite observation or reward at step {self.num_timesteps} "
                f"(obs={new_obs}, reward={reward}). Fix the environment or wrap it to sanitise its outputs; "
                "non-finite data would corrupt the dynamics model."
            )
        super()._store_transition(replay_buffer, buffer_action, new_obs, reward, dones, infos)

    # ------------------------------------------------------------------ model learning
    def _learn_model(self, data: Transitions) -> th.Tensor | None:
        """
        Model-learning hook: fit ``self.dynamics`` on the real transitions ``data``.

        Subclasses (e.g. TOM) override this to change which transitions the model fits and where rollouts start.

        :param data: Every real transition of the replay buffer, oldest first.
        :return: Optional unnormalised probabilities (shape ``(len(data),)``) of drawing each transition's state as
            a rollout start state; None for uniform.
        """
        self._fit_dynamics(data)
        return None

    def _fit_dynamics(self, data: Transitions, sample_weight: th.Tensor | None = None, resample: bool = False) -> FitResult:
        """
        Train the ensemble on ``data`` (optionally weighted per sample, see :meth:`EnsembleTrainer.fit`) and log the
        result.
        """
        result = self.dynamics_trainer.fit(
            data.observations,
            data.actions,
            data.rewards,
            data.next_observations,
            sample_weight=sample_weight,
            resample=resample,
        )
        for key in ("holdout_mse", "holdout_nll", "holdout_weight_ess", "train_loss", "epochs"):
            self.logger.record(f"model/{key}", getattr(result, key))
        self.logger.record("model/train_seconds", result.seconds)
        self.logger.record("model/elites", str(result.elites), exclude="tensorboard")
        if self.verbose >= 2:
            print(f"Model trained: {result}")
        return result

    def _real_data(self) -> Transitions:
        """Every real transition, oldest first."""
        assert self.replay_buffer is not None
        return real_transitions(self.replay_buffer, self.device)

    def train_model_and_rollout(self) -> None:
        """One model round: train the ensemble on the real buffer, then refill the model buffer with rollouts."""
        data = self._real_data()
        self._log_new_data_error(data)
        start_probabilities = self._learn_model(data)
        if self._learned_termination is not None:
            stats = self._learned_termination.fit(data.observations, data.actions, data.next_observations, data.terminated)
            if self._learned_termination.has_seen_terminal:
                for key, value in stats.items():
                    self.logger.record(f"model/termination_{key}", value)
        self._last_model_train_step = self.num_timesteps
        self._rollout(data.observations, start_probabilities)

    def _log_new_data_error(self, data: Transitions) -> None:
        """
        Log the error of the model as it stands before this round on the real transitions collected since the
        previous round (``model/new_data_*``): the current policy's transitions, which the model has not been trained
        on. How well the model predicts where the policy goes is what TOM's weights aim to improve.
        """
        n_new = min(self.num_timesteps - self._last_model_train_step, len(data))
        if not bool(self.dynamics.trained) or self._last_model_train_step < 0 or n_new < 1:
            return
        new = slice(len(data) - n_new, None)
        mse, nll = self.dynamics_trainer.elite_error(
            data.observations[new], data.actions[new], data.rewards[new], data.next_observations[new]
        )
        self.logger.record("model/new_data_mse", mse)
        self.logger.record("model/new_data_nll", nll)
        self.logger.record("model/new_data_transitions", n_new)

    def _rollout(self, start_pool: th.Tensor, start_probabilities: th.Tensor | None = None) -> None:
        """Sample start states from ``start_pool`` (uniformly or ∝ ``start_probabilities``) and roll the model."""
        start = time.perf_counter()
        length = self.current_rollout_length
        capacity = self._model_buffer_capacity(length)
        if capacity != self.model_buffer.capacity:
            self.model_buffer = self.model_buffer.resized(capacity)
        n = start_pool.shape[0]
        if start_probabilities is None:
            idx = th.randint(n, (self.rollout_batch_size,), device=self.device)
        else:
            idx = th.multinomial(start_probabilities, self.rollout_batch_size, replacement=True)
        self.policy.set_training_mode(False)
        stats = branched_rollout(
            self.dynamics,
            self._sample_actions,
            self._termination,
            start_pool[idx],
            length,
            self.model_buffer,
        )
        self.logger.record("rollout/model_buffer_size", len(self.model_buffer))
        self.logger.record("rollout/rollout_length", length)
        self.logger.record("rollout/terminated_fraction", stats.terminated_fraction)
        self.logger.record("rollout/mean_model_rollout_length", stats.mean_length)
        self.logger.record("rollout/nonfinite_dropped", stats.n_nonfinite)
        self.logger.record("rollout/rollout_seconds", time.perf_counter() - start)
        if stats.n_nonfinite and self.verbose >= 1:
            print(f"Dropped {stats.n_nonfinite} non-finite model predictions during rollouts.")

    def _sample_actions(self, obs: th.Tensor) -> th.Tensor:
        """
        Actions of the current stochastic policy (in the scaled ``[-1, 1]`` space) for a batch of observations,
        evaluated ``tuning.POLICY_CHUNK_ROWS`` rows at a time: 100k rollout states would otherwise hold several
        100k x 256 activations at once. Call it without autograd (rollouts, TOM's dual problem).
        """
        return th.cat([self.actor(chunk, deterministic=False) for chunk in obs.split(tuning.POLICY_CHUNK_ROWS)])

    def _model_round_due(self) -> bool:
        """
        A model round is due every ``model_train_freq`` steps, and whenever the model buffer is empty: before the
        first round, at the start of a ``learn`` that resets the step counter, and after ``load`` (the model buffer is
        not saved, so it is refilled by a full round, with TOM's weights and start states, not a uniform rollout).
        """
        return (
            not bool(self.dynamics.trained)
            or len(self.model_buffer) == 0
            or self.num_timesteps - self._last_model_train_step >= self.model_train_freq
        )

    # ------------------------------------------------------------------ policy training
    def train(self, gradient_steps: int, batch_size: int = 256) -> None:
        assert self.replay_buffer is not None
        n_real = real_buffer_size(self.replay_buffer)
        if n_real < batch_size:
            if not self._warned_small_buffer:
                warnings.warn(
                    f"The replay buffer holds {n_real} transitions (< batch_size={batch_size}): skipping updates. "
                    "After load(), call load_replay_buffer() to continue training where it left off."
                )
                self._warned_small_buffer = True
            return
        if self._model_round_due():
            self.train_model_and_rollout()
        self._policy_updates(gradient_steps, batch_size)

    def _policy_updates(self, gradient_steps: int, batch_size: int) -> None:
        """
        SAC updates on mixed real/model batches: the fused update of :mod:`sb3_tom.mbpo.fast_sac` if
        ``fast_update``, else SB3's ``SAC.train`` on a mixed-batch sampler (the same maths).
        """
        real_buffer = self.replay_buffer
        assert real_buffer is not None
        sampler = MixedBatchSampler(real_buffer, self.model_buffer, self.real_ratio)
        if self.fast_update:
            fast_sac_train(self, gradient_steps, batch_size, sampler)
            return
        self.replay_buffer = sampler  # type: ignore[assignment]
        try:
            super().train(gradient_steps, batch_size)
        finally:
            self.replay_buffer = real_buffer

    # ------------------------------------------------------------------ save / load
    def _excluded_save_params(self) -> list[str]:
        return [
            *super()._excluded_save_params(),
            "dynamics",
            "dynamics_trainer",
            "model_buffer",
            "_termination",
            "_learned_termination",
        ]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts, variables = super()._get_torch_save_params()
        state_dicts = [*state_dicts, "dynamics", "dynamics_trainer.optimizer"]
        if self._learned_termination is not None:  # built by _setup_model for the same env after load
            state_dicts += ["_learned_termination", "_learned_termination.optimizer"]
        return state_dicts, variables

    def _setup_learn(
        self,
        total_timesteps: int,
        callback: MaybeCallback = None,
        reset_num_timesteps: bool = True,
        tb_log_name: str = "run",
        progress_bar: bool = False,
    ) -> tuple[int, BaseCallback]:
        if reset_num_timesteps:
            # A new run: its first update starts with a model round, and SAC never trains on the last run's rollouts
            self._last_model_train_step = -1
            self.model_buffer.clear()
        if (reset_num_timesteps or self._last_obs is None) and self.replay_buffer is not None:
            # SB3 resets the env (after ``load`` too): the stored episode is cut there, and the next one starts
            end_last_episode(self.replay_buffer)
        return super()._setup_learn(total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar)

    def learn(
        self: SelfMBPO,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str | None = None,
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfMBPO:
        """
        SB3's ``learn``; the TensorBoard run is named after the class (``MBPO_1``, ``MBPO_TOM_1``) unless
        ``tb_log_name`` is given.
        """
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=type(self).__name__ if tb_log_name is None else tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )
