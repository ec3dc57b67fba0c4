import re

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from conftest import TINY_MBPO, env_transitions
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import configure

from sb3_tom import MBPO_TOM
from sb3_tom.buffers import Transitions, recent_mask
from sb3_tom.dynamics.ensemble import GaussianEnsemble
from sb3_tom.dynamics.training import EnsembleTrainer
from sb3_tom.tom.discriminator import (
    TransitionDiscriminator,
    make_discriminator_optimizer,
    train_discriminator,
)
from sb3_tom.tom.divergence import F_DIVERGENCES, get_f_divergence
from sb3_tom.tom.dual import DualTrainer, DualValue, residuals
from sb3_tom.tom.start_states import episode_start_mask
from sb3_tom.tom.weights import clip_weights


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative."""
    scores = np.concatenate([positive, negative])
    ranks = scores.argsort().argsort() + 1
    r_pos = ranks[: len(positive)].sum()
    return (r_pos - len(positive) * (len(positive) + 1) / 2) / (len(positive) * len(negative))


def synthetic_buffer(n_old=3000, n_recent=1000, seed=0):
    """Old transitions around s=0 with random actions; recent ones around s=1.5 with actions near 0.5."""
    gen = th.Generator().manual_seed(seed)
    s_old = 0.5 * th.randn(n_old, 2, generator=gen)
    a_old = th.rand(n_old, 1, generator=gen) * 2 - 1
    s_new = 3.0 + 0.5 * th.randn(n_recent, 2, generator=gen)
    a_new = (0.5 + 0.2 * th.randn(n_recent, 1, generator=gen)).clamp(-1, 1)
    s, a = th.cat([s_old, s_new]), th.cat([a_old, a_new])
    next_s = s + 0.1 * a
    n = n_old + n_recent
    ends = th.zeros(n)
    ends[49::50] = 1.0  # episodes of 50 steps
    return Transitions(s, a, th.zeros(n), next_s, th.zeros(n), ends)


def recent_like_policy(obs: th.Tensor) -> th.Tensor:
    return (0.5 + 0.2 * th.randn(obs.shape[0], 1)).clamp(-1, 1)


# ---------------------------------------------------------------- (a) recent above old
@pytest.mark.parametrize("f_divergence, gamma", [("chi", 0.5), ("kl", 0.9)])
def test_discriminator_and_weights_rank_recent_above_old(f_divergence, gamma):
    """
    The current policy starts in the recent region and its actions keep it there, so its occupancy is the recent
    region: the optimal weights are about 4 on recent transitions and 0 on old ones. (The discount is below 0.99
    so that 1000 dual steps converge on this degenerate problem, where the true ratio on old data is 0.)
    """
    th.manual_seed(0)
    data = synthetic_buffer()
    n = len(data)
    recent = recent_mask(n, 1000)
    disc = TransitionDiscriminator(2, 1)
    inputs = TransitionDiscriminator.inputs(data)
    stats = train_discriminator(disc, inputs[recent], inputs, make_discriminator_optimizer(disc), n_steps=300)
    assert stats.accuracy > 0.7
    with th.no_grad():
        log_ratio = disc(inputs)
    assert auc(log_ratio[recent].numpy(), log_ratio[~recent].numpy()) > 0.9

    dual = DualValue(2, 1)
    trainer = DualTrainer(dual, f_divergence, gamma=gamma)
    starts = data.observations[recent][::50]
    trainer.train(data, log_ratio, starts, recent_like_policy, n_steps=1000)
    with th.no_grad():
        e = residuals(dual, data, log_ratio, recent_like_policy(data.next_observations), gamma)
    divergence = F_DIVERGENCES[f_divergence]
    w = clip_weights(divergence.normalized(e, divergence.reference(e)), 10.0)
    assert auc(w[recent].numpy(), w[~recent].numpy()) > 0.9
    assert float(w[recent].mean()) > 10 * float(w[~recent].mean())


# ---------------------------------------------------------------- (b) known ratio
@pytest.mark.parametrize("f_divergence", ["chi", "kl"])
def test_dual_weights_recover_known_ratio(f_divergence):
    """
    With γ = 0, r = 0 and μ0 = the buffer's state distribution, the optimal weight of (s, a) is π(a|s) / β(a|s).
    Behaviour β = N(0, 0.6²), policy π = N(0.2 s, 0.4²), s ~ U(-1, 1).
    """
    th.manual_seed(1)
    n = 20_000
    s = th.rand(n, 1) * 2 - 1
    a = 0.6 * th.randn(n, 1)
    data = Transitions(s, a, th.zeros(n), s.clone(), th.zeros(n))

    def policy(obs):
        return 0.2 * obs + 0.4 * th.randn(obs.shape[0], 1)

    def log_normal(x, mu, sigma):
        return -0.5 * ((x - mu) / sigma) ** 2 - np.log(sigma)

    true_w = th.exp(log_normal(a, 0.2 * s, 0.4) - log_normal(a, 0.0, 0.6)).squeeze(-1)
    dual = DualValue(1, 1, (64, 64))
    trainer = DualTrainer(dual, f_divergence, gamma=0.0, learning_rate=1e-3, weight_decay=0.0, batch_size=512)
    trainer.train(data, th.zeros(n), s, policy, n_steps=3000)
    with th.no_grad():
        e = residuals(dual, data, th.zeros(n), policy(s), 0.0)
    divergence = F_DIVERGENCES[f_divergence]
    w = divergence.normalized(e, divergence.reference(e))
    # Compare where the true ratio is not extreme (the bulk of the buffer)
    bulk = true_w < 3.0
    assert float(bulk.float().mean()) > 0.9
    rel_err = ((w[bulk] - true_w[bulk]).abs() / true_w[bulk].clamp_min(0.1)).median()
    corr = np.corrcoef(w[bulk].numpy(), true_w[bulk].numpy())[0, 1]
    # tolerance: median relative error below 25% and correlation above 0.9
    assert rel_err < 0.25, float(rel_err)
    assert corr > 0.9, corr


def one_step_loss(recent: th.Tensor, buffer: th.Tensor, seed: int = 0, **kwargs) -> float:
    """The loss of the first discriminator step (before its update) on ``recent`` vs ``buffer``."""
    th.manual_seed(seed)
    disc = TransitionDiscriminator(1, 2, branch_size=16, hidden_size=32)  # inputs [s, a, s'] of 1 + 2 + 1 columns
    th.manual_seed(seed + 1)
    return train_discriminator(disc, recent, buffer, make_discriminator_optimizer(disc), n_steps=1, **kwargs).loss


def test_discriminator_loss_is_mean_bce_of_positives_plus_mean_bce_of_negatives():
    """As the official code: BCE(recent, 1).mean() + BCE(buffer, soft label).mean(), not their mean over 2B rows."""
    gen = th.Generator().manual_seed(0)
    buffer = th.randn(500, 4, generator=gen)
    recent, negative = buffer[:1], buffer[1:2]  # one positive and one negative row: every batch repeats them
    th.manual_seed(0)
    disc = TransitionDiscriminator(1, 2, branch_size=16, hidden_size=32)
    state = {k: v.clone() for k, v in disc.state_dict().items()}
    bce = th.nn.functional.binary_cross_entropy_with_logits
    loss = train_discriminator(
        disc, recent, th.cat([negative, negative]), make_discriminator_optimizer(disc), n_steps=1, gradient_penalty=0.0
    ).loss
    # the normaliser is fitted on the buffer (two copies of the negative): compare on the same footing
    disc.load_state_dict(state)
    disc.fit_normalizer(th.cat([negative, negative]))
    with th.no_grad():
        expected = bce(disc(recent), th.ones(1)) + bce(disc(negative), th.full((1,), 0.1))
    assert loss == pytest.approx(float(expected), rel=1e-5)


def test_discriminator_loss_does_not_depend_on_the_units_of_an_input():
    """
    The gradient penalty is taken in the standardised space the network sees: rescaling one input dimension (a
    near-constant one, as Hopper's height on random data with std 0.02) changes nothing.
    """
    gen = th.Generator().manual_seed(0)
    buffer = th.randn(2000, 4, generator=gen)
    recent = buffer[-500:] + 0.5
    scaled_buffer, scaled_recent = buffer.clone(), recent.clone()
    scaled_buffer[:, 0] *= 0.02
    scaled_recent[:, 0] *= 0.02
    loss = one_step_loss(recent, buffer)
    assert np.isfinite(loss) and loss < 20
    assert one_step_loss(scaled_recent, scaled_buffer) == pytest.approx(loss, rel=1e-4)


def test_constant_input_dimension_is_not_amplified():
    """A constant input dimension (std 0) is left unscaled (std taken as 1), as the ensemble's normaliser does."""
    gen = th.Generator().manual_seed(0)
    buffer = th.randn(2000, 4, generator=gen)
    buffer[:, 1] = 0.25
    disc = TransitionDiscriminator(1, 2)
    disc.fit_normalizer(buffer)
    assert float(disc.input_std[1]) == 1.0
    noisy = buffer[:10].clone()
    noisy[:, 1] += 1e-3  # e.g. model noise in a dimension that is constant in the real data
    with th.no_grad():
        assert float((disc(noisy) - disc(buffer[:10])).abs().max()) < 0.1


@pytest.mark.parametrize("env_id", ["InvertedDoublePendulum-v4", "Humanoid-v4"])
def test_discriminator_separates_recent_from_old_on_real_env_data(env_id):
    """
    Real observation spaces with constant and near-constant dimensions (InvertedDoublePendulum: 11-D with zero
    constraint forces; Humanoid: 376-D with many zero contact forces, 17-D actions): the recent window comes from a
    different action distribution than the rest of the buffer, and the discriminator must tell them apart with an
    O(1) loss.
    """
    old = env_transitions(env_id, 3000, seed=0)
    recent = env_transitions(env_id, 1000, action_mean=0.5, action_std=0.2, seed=1)
    obs_dim, action_dim = old[0].shape[1], old[1].shape[1]
    to_inputs = lambda t: th.cat([t[0], t[1], t[3]], dim=1)  # noqa: E731
    old_inputs, recent_inputs = to_inputs(old), to_inputs(recent)
    th.manual_seed(0)
    disc = TransitionDiscriminator(obs_dim, action_dim)
    buffer = th.cat([old_inputs, recent_inputs])
    stats = train_discriminator(disc, recent_inputs, buffer, make_discriminator_optimizer(disc))
    assert np.isfinite(stats.loss) and stats.loss < 5.0, stats
    with th.no_grad():
        logit_old, logit_recent = disc(old_inputs), disc(recent_inputs)
    accuracy = 0.5 * (float((logit_recent > 0).float().mean()) + float((logit_old <= 0).float().mean()))
    assert accuracy > 0.8, (accuracy, float(logit_recent.mean()), float(logit_old.mean()))
    assert auc(logit_recent.numpy(), logit_old.numpy()) > 0.9


@pytest.mark.parametrize("f_divergence", ["chi", "kl"])
def test_dual_training_is_adam_on_the_dual_loss_on_real_env_data(f_divergence):
    """
    DualTrainer.train (fast kernels, Adam's fused kernel called directly) is plain ``loss.backward(); Adam.step()`` on
    DualTrainer.loss, on real HalfCheetah-v4 transitions (17-D observations, 6-D actions).
    """
    obs, actions, rewards, next_obs, terminated = env_transitions("HalfCheetah-v4", 400, seed=0)
    data = Transitions(obs, actions, rewards, next_obs, terminated)
    gen = th.Generator().manual_seed(1)
    log_ratio = 3 * th.randn(len(data), generator=gen)  # large enough to reach the KL clamp
    start_obs = data.observations[:20]
    # Fixed networks: Adam turns a gradient at float-rounding level (a hidden unit no sample of the batch activates)
    # into a full step whose sign is rounding noise, which no tolerance on the comparison could cover.
    th.manual_seed(0)
    policy = th.nn.Linear(17, 6)

    def sample_actions(obs):
        return th.tanh(policy(obs) + 0.1 * th.randn(obs.shape[0], 6))

    dual, reference = DualValue(17, 6, (64, 64)), DualValue(17, 6, (64, 64))
    reference.load_state_dict(dual.state_dict())
    initial = {key: value.clone() for key, value in dual.state_dict().items()}
    trainer = DualTrainer(dual, f_divergence=f_divergence, gamma=0.9, batch_size=32)
    reference_trainer = DualTrainer(reference, f_divergence=f_divergence, gamma=0.9, batch_size=32)
    optimizer = th.optim.Adam(reference.parameters(), lr=3e-4, weight_decay=1e-4)
    th.manual_seed(0)
    last_loss = trainer.train(data, log_ratio, start_obs, sample_actions, n_steps=5)
    th.manual_seed(0)
    for _ in range(5):
        idx = th.randint(len(data), (32,))
        batch = data.index(idx)
        s0 = start_obs[th.randint(20, (32,))]
        with th.no_grad():
            a0, next_actions = sample_actions(th.cat([s0, batch.next_observations])).split(32)
        loss = reference_trainer.loss(batch, log_ratio[idx], s0, a0, next_actions)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert last_loss == pytest.approx(float(loss.detach()), rel=1e-4, abs=1e-5)
    for key, value in reference.state_dict().items():
        th.testing.assert_close(dual.state_dict()[key], value, atol=1e-5, rtol=1e-4, msg=key)
    assert all(not th.equal(dual.state_dict()[key], value) for key, value in initial.items())  # every tensor moved


def test_kl_loss_is_stable_for_large_residuals():
    e = th.tensor([1000.0, -1000.0, 0.0])
    kl = F_DIVERGENCES["kl"]
    assert th.isfinite(kl.conjugate_mean(e))
    w = kl.normalized(e, kl.reference(e))
    assert th.isfinite(w).all() and float(w.mean()) == pytest.approx(1.0, rel=1e-4)


def test_kl_weights_are_exp_e_wherever_that_is_finite_and_every_residual_has_a_gradient():
    """
    As the official code, ``w = exp(e)`` (no bound on ``e`` below float32's overflow at about 88.7), finite beyond it;
    the log-sum-exp dual term passes a gradient to every residual, the large ones included.
    """
    kl = F_DIVERGENCES["kl"]
    e = th.tensor([0.0, 60.0, 55.0, -5.0], requires_grad=True)
    (grad,) = th.autograd.grad(kl.conjugate_mean(e), e)
    th.testing.assert_close(grad, th.softmax(e.detach(), 0))  # exp(e) / sum exp(e), each one positive
    assert bool((grad > 0).all()), grad
    e = th.tensor([0.0, 60.0, -60.0, 80.0, 200.0])
    w = kl.weights(e)
    th.testing.assert_close(w[:4], th.exp(e[:4]))
    assert bool(th.isfinite(w).all()) and float(w[4]) == th.finfo(th.float32).max
    normalized = kl.normalized(e, kl.reference(e))
    assert bool(th.isfinite(normalized).all()) and float(normalized.mean()) == pytest.approx(1.0, rel=1e-5)


# ---------------------------------------------------------------- (c) weighted NLL fits the weighted subset
def test_weighted_nll_fits_weighted_subset_better_than_mle():
    gen = th.Generator().manual_seed(0)
    n = 2000
    s = th.rand(n, 1, generator=gen) * 2 - 1
    a = th.rand(n, 1, generator=gen) * 2 - 1
    new = th.arange(n) >= n // 2  # same inputs, but the dynamics changed: old s' = s + 1, new s' = s - 1
    next_s = s + th.where(new, -1.0, 1.0).unsqueeze(1) + 0.01 * th.randn(n, 1, generator=gen)
    rewards = th.zeros(n)
    weights = th.where(new, 1.9, 0.1)

    def fit(sample_weight):
        th.manual_seed(0)
        ens = GaussianEnsemble(1, 1, ensemble_size=3, num_elites=2, hidden_sizes=(32, 32))
        EnsembleTrainer(ens, max_epochs=40, patience=40, learning_rate=3e-3).fit(s, a, rewards, next_s, sample_weight)
        pred, _ = ens.sample(s[new], a[new], deterministic=True)
        return float(((pred - next_s[new]) ** 2).mean())

    mse_weighted, mse_mle = fit(weights), fit(None)
    assert mse_weighted < 0.5 * mse_mle, (mse_weighted, mse_mle)


# ---------------------------------------------------------------- the algorithm
FAST = dict(
    **TINY_MBPO,
    learning_starts=200,
    model_train_freq=200,
    rollout_batch_size=300,
    model_max_epochs=3,
    policy_buffer_size=100,  # rounds at steps 201 (maximum likelihood: 1 policy transition) and 401 (TOM)
    discriminator_steps=30,
    dual_steps=50,
)


def fast_tom(env="Pendulum-v1", **kwargs):
    return MBPO_TOM("MlpPolicy", env, **{**FAST, **kwargs})


def test_tom_logs_diagnostics_and_weights_normalised():
    model = fast_tom(seed=0)
    model.set_logger(configure(None, [""]))
    model.learn(500)
    values = model.logger.name_to_value
    for key in [
        "tom/discriminator_loss",
        "tom/discriminator_accuracy",
        "tom/dual_loss",
        "tom/weight_raw_mean",
        "tom/weight_max",
        "tom/weight_ess_fraction",
        "tom/weight_clipped_fraction",
        "tom/recent_weight_ratio",
    ]:
        assert key in values and np.isfinite(values[key]), key
    assert values["tom/discriminator_seconds"] > 0 and values["tom/dual_seconds"] > 0
    data = model._real_data()
    w = model.transition_weights(
        data.observations.numpy(), data.actions.numpy(), data.next_observations.numpy(), data.terminated.numpy()
    )
    assert w.shape == (len(data),) and (w >= 0).all()
    assert w.mean() == pytest.approx(1.0, rel=1e-4)


@pytest.mark.parametrize("clip", [True, False])
def test_start_states_are_drawn_from_clipped_or_official_unclipped_weights(clip):
    """The default draws rollout starts ∝ the clipped weights the model was fit with; the official code ∝ raw ``w``."""
    model = fast_tom(seed=0, weight_clip=1.5, clip_start_state_weights=clip)
    model.set_logger(configure(None, [""]))
    drawn: list[th.Tensor] = []
    original = model._rollout
    model._rollout = lambda pool, p=None: (drawn.append(p), original(pool, p))[1]  # type: ignore[method-assign]
    model.learn(500)
    assert model.logger.name_to_value["tom/active"] == 1 and model.logger.name_to_value["tom/weight_clipped_fraction"] > 0
    probabilities = drawn[-1]
    assert probabilities is not None and len(probabilities) == 401  # one per real transition at the last round
    if clip:
        assert float(probabilities.max()) == pytest.approx(1.5)
    else:  # normalised (mean 1 over the buffer), never clipped: ∝ the raw weights
        assert float(probabilities.max()) > 1.5 and float(probabilities.mean()) == pytest.approx(1.0, rel=1e-4)


@pytest.mark.parametrize("weight_mode", ["weighted_nll", "resample"])
def test_weight_diagnostics_describe_the_weights_the_model_is_fit_with(weight_mode):
    """
    ``tom/weight_ess_fraction``, ``tom/weight_clipped_fraction`` and ``tom/recent_weight_ratio`` are statistics of the
    weights the ensemble is trained with: the normalised, clipped ones, or with ``"resample"`` the raw weights clipped
    (never normalised). Residuals shifted by +3 put the raw weights' mean far from 1, where the two differ.
    """
    model = fast_tom("HalfCheetah-v4", seed=0, weight_mode=weight_mode, weight_clip=2.0)  # 6-D actions, 17-D obs
    model.set_logger(configure(None, [""]))
    residuals_of = model._residuals
    model._residuals = lambda data, log_ratio: residuals_of(data, log_ratio) + 3.0  # type: ignore[method-assign]
    fitted: list[th.Tensor] = []
    fit = model._fit_dynamics

    def recording_fit(data, sample_weight=None, resample=False):
        if sample_weight is not None:
            fitted.append(sample_weight)
        return fit(data, sample_weight, resample)

    model._fit_dynamics = recording_fit  # type: ignore[method-assign]
    model.learn(450)
    values = model.logger.name_to_value
    assert values["tom/active"] == 1 and len(fitted) == 1
    w = fitted[0]
    recent = recent_mask(len(w), model.policy_buffer_size)
    assert values["tom/weight_ess_fraction"] == pytest.approx(float(w.sum() ** 2 / (w**2).sum()) / len(w), rel=1e-5)
    assert values["tom/weight_clipped_fraction"] == pytest.approx(float((w == 2.0).float().mean()), abs=1e-6)
    assert values["tom/recent_weight_ratio"] == pytest.approx(float(w[recent].mean() / w.mean()), rel=1e-5)
    if weight_mode == "resample":  # raw weights, most of them clipped: their mean is about 4
        assert values["tom/weight_clipped_fraction"] > 0.5 and values["tom/weight_raw_mean"] > 2.0


def record_rounds(model: MBPO_TOM) -> list[tuple[int, int]]:
    """``(num_timesteps, tom/active)`` of every model round ``model`` runs from now on."""
    rounds: list[tuple[int, int]] = []
    original = model._learn_model

    def learn_model(data):
        result = original(data)
        rounds.append((model.num_timesteps, model.logger.name_to_value["tom/active"]))
        return result

    model._learn_model = learn_model  # type: ignore[method-assign]
    return rounds


def test_tom_waits_for_policy_buffer_size_policy_transitions():
    """
    As the reference: the current-policy pool only holds transitions collected by the policy (after
    ``learning_starts``), and model learning is plain maximum likelihood until it holds ``policy_buffer_size``.
    """
    model = fast_tom(learning_starts=300, policy_buffer_size=200, model_train_freq=100)
    model.set_logger(configure(None, [""]))
    rounds = record_rounds(model)
    with pytest.raises(RuntimeError, match="No TOM round"):
        model.transition_weights(np.zeros((1, 3)), np.zeros((1, 1)), np.zeros((1, 3)), np.zeros(1))
    model.learn(600)
    assert rounds == [(301, 0), (401, 0), (501, 1)]


def test_episode_starts_after_the_buffer_wrapped():
    """Once the replay buffer wrapped, its oldest row is the middle of an episode, not an episode start."""
    model = fast_tom(buffer_size=250, learning_starts=300)  # Pendulum: 200-step episodes; random actions only
    model.learn(470)
    data = model._real_data()
    starts = model._episode_start_mask(data)
    # stored steps 220..469: the only episode start is step 400, row 180
    assert th.nonzero(starts).flatten().tolist() == [180]
    assert bool(data.episode_ends[179]) and not bool(data.episode_ends[:179].any())


def test_tensorboard_run_named_after_the_algorithm(tmp_path):
    model = fast_tom(tensorboard_log=str(tmp_path))
    model.learn(20)
    assert [p.name for p in tmp_path.iterdir()] == ["MBPO_TOM_1"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"use_discriminator": False},
        {"f_divergence": "kl"},
        {"weight_mode": "resample"},
        {"weighted_start_states": False, "weight_clip": None},
        {"official_discriminator": True},
    ],
)
def test_variants_run(kwargs):
    model = fast_tom(seed=1, **kwargs)
    model.set_logger(configure(None, [""]))
    model.learn(450)
    assert model.logger.name_to_value["tom/active"] == 1
    assert np.isfinite(model.logger.name_to_value["tom/weight_ess_fraction"])
    if kwargs.get("use_discriminator") is False:
        # (d) the recent window is rewarded, so it gets more weight than the buffer on average
        assert model.logger.name_to_value["tom/recent_weight_ratio"] > 1.0


def test_official_discriminator_trains_head_only():
    """The official code's optimiser covers only the head: the input branches keep their random initialisation."""
    data = synthetic_buffer()
    inputs = TransitionDiscriminator.inputs(data)
    th.manual_seed(0)
    disc = TransitionDiscriminator(2, 1, standardize_inputs=False)
    before = {k: v.clone() for k, v in disc.state_dict().items()}
    optimizer = make_discriminator_optimizer(disc, head_only=True)
    train_discriminator(disc, inputs[-1000:], inputs, optimizer, n_steps=20)
    for name, value in disc.state_dict().items():
        assert th.equal(value, before[name]) == (not name.startswith("head.")), name
    assert th.equal(disc.input_std, th.ones_like(disc.input_std))

    model = fast_tom(seed=0, official_discriminator=True)
    model.learn(450)
    assert not model.discriminator.standardize_inputs
    trained = {id(p) for group in model.discriminator_optimizer.param_groups for p in group["params"]}
    assert trained == {id(p) for p in model.discriminator.head.parameters()}


def test_tom_save_load_roundtrip(tmp_path):
    model = fast_tom(seed=2)
    model.learn(450)
    model.save(tmp_path / "tom.zip")
    model.save_replay_buffer(tmp_path / "buffer.pkl")
    loaded = MBPO_TOM.load(tmp_path / "tom.zip", env=make_vec_env("Pendulum-v1", n_envs=1))
    loaded.load_replay_buffer(tmp_path / "buffer.pkl")
    data = model._real_data()
    args = (data.observations.numpy(), data.actions.numpy(), data.next_observations.numpy(), data.terminated.numpy())
    np.testing.assert_array_equal(model.transition_weights(*args), loaded.transition_weights(*args))
    for name in ["discriminator_optimizer", "dual_optimizer", "dynamics_optimizer"]:
        a, b = getattr(model, name).state_dict()["state"], getattr(loaded, name).state_dict()["state"]
        assert a.keys() == b.keys() and all(th.equal(a[k]["exp_avg"], b[k]["exp_avg"]) for k in a)
    for p, q in zip(model.dual.parameters(), loaded.dual.parameters(), strict=True):
        assert th.equal(p, q)
    assert loaded.f_divergence == model.f_divergence and loaded.policy_buffer_size == 100
    loaded.set_logger(configure(None, [""]))
    rounds = record_rounds(loaded)
    loaded.learn(200, reset_num_timesteps=False)
    assert loaded.num_timesteps == 650
    # the model buffer is not saved: the first update after load runs a full TOM round (weights and start states)
    assert rounds == [(451, 1)]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"f_divergence": "js"}, "f_divergence"),
        ({"weight_mode": "both"}, "weight_mode"),
        ({"weight_clip": 0}, "weight_clip"),
        ({"policy_buffer_size": 0}, "policy_buffer_size"),
        ({"dual_gamma": 1.0}, "dual_gamma"),
        ({"discriminator_soft_label": 1.0}, "soft_label"),
    ],
)
def test_bad_tom_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MBPO_TOM("MlpPolicy", "Pendulum-v1", **kwargs)


def test_episode_start_mask():
    ends = th.tensor([0.0, 0.0, 1.0, 0.0, 1.0, 0.0])
    data = Transitions(*(th.zeros(6, 1) for _ in range(2)), th.zeros(6), th.zeros(6, 1), th.zeros(6), ends)
    assert episode_start_mask(data).tolist() == [True, False, False, True, False, True]


def test_default_construction_on_halfcheetah():
    """The class defaults are MBPO's generic ones and TOM's (the per-env settings live in hyperparams/)."""
    model = MBPO_TOM("MlpPolicy", "HalfCheetah-v4", buffer_size=1000)
    assert (model.gradient_steps, model.learning_starts, model.model_train_freq, model.rollout_batch_size) == (
        20,
        5000,
        250,
        100_000,
    )
    tom = (model.policy_buffer_size, model.f_divergence, model.discriminator_steps, model.dual_steps)
    assert tom == (1000, "chi", 400, 1000)
    assert model.dynamics.obs_dim == 17 and model.dynamics.action_dim == 6 and model.discriminator.obs_dim == 17
    assert model.model_buffer.capacity == 1 * 100_000 * 4


def test_dual_network_starts_as_the_official_code():
    """
    The dual ``Q(s, a)`` is built as the official code's ``QNetwork`` (``weights_init_``): Xavier-uniform weights
    (gain 1) and zero biases, on HalfCheetah-v4's 17 + 6 inputs and the shipped 256x256 hidden layers.
    """
    th.manual_seed(0)
    model = MBPO_TOM("MlpPolicy", "HalfCheetah-v4", buffer_size=1000)
    layers = [module for module in model.dual.modules() if isinstance(module, th.nn.Linear)]
    assert [tuple(layer.weight.shape) for layer in layers] == [(256, 23), (256, 256), (1, 256)]
    for layer in layers:
        fan_out, fan_in = layer.weight.shape
        bound = (6.0 / (fan_in + fan_out)) ** 0.5
        weight = layer.weight.detach()
        assert float(layer.bias.detach().abs().max()) == 0.0
        assert float(weight.abs().max()) <= bound
        assert float(weight.abs().max()) > 0.9 * bound  # uniform on [-bound, bound], not a narrower default
        if weight.numel() > 1000:
            assert float(weight.std()) == pytest.approx(bound / 3**0.5, rel=0.05)


@pytest.mark.parametrize("algo", ["mbpo", "mbpo_tom"])
def test_randomised_parameters_survive_save_and_load(tmp_path, algo):
    """sb3-contrib's generic check: randomise every tensor of get_parameters(), set, save, load, compare."""
    from sb3_tom import MBPO

    if "NoTerminationKnown-v0" not in gym.registry:
        gym.register("NoTerminationKnown-v0", entry_point="gymnasium.envs.classic_control:PendulumEnv", max_episode_steps=50)
    cls = MBPO_TOM if algo == "mbpo_tom" else MBPO
    tom_only = {"policy_buffer_size", "discriminator_steps", "dual_steps"}
    params = {k: v for k, v in FAST.items() if algo == "mbpo_tom" or k not in tom_only}
    model = cls("MlpPolicy", "NoTerminationKnown-v0", **params)
    model.learn(250)
    original = model.get_parameters()
    assert "_learned_termination" in original
    randomised = {}
    for name, tensors in original.items():
        if "optimizer" in name:
            continue
        assert all(t.is_floating_point() or t.dtype == th.long for t in tensors.values()), name
        randomised[name] = {
            key: th.rand_like(t) if t.is_floating_point() else th.randint_like(t, 0, 2) for key, t in tensors.items()
        }
    model.set_parameters(randomised, exact_match=False)
    model.save(tmp_path / "agent.zip")
    loaded = cls.load(tmp_path / "agent.zip")
    reloaded = loaded.get_parameters()
    for name, tensors in randomised.items():
        for key, value in tensors.items():
            assert th.equal(reloaded[name][key], value), (name, key)


def test_full_typed_signature_and_docstring():
    """help() and IDEs see every constructor argument of MBPO_TOM with its type and default, and its :param: line."""
    import inspect

    from stable_baselines3.common.type_aliases import MaybeCallback

    from sb3_tom import MBPO

    tom, base = inspect.signature(MBPO_TOM.__init__).parameters, inspect.signature(MBPO.__init__).parameters
    assert not any(p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) for p in tom.values())
    for name, parameter in base.items():
        assert tom[name].default == parameter.default and tom[name].annotation == parameter.annotation, name
    for name in ("policy_buffer_size", "f_divergence", "weight_mode", "weighted_start_states"):
        assert tom[name].annotation is not inspect.Parameter.empty, name
    documented = set(re.findall(r":param (\w+):", MBPO_TOM.__doc__ or ""))
    assert set(tom) - {"self"} == documented
    assert inspect.signature(MBPO_TOM.learn).parameters["callback"].annotation == MaybeCallback


def test_every_mbpo_argument_reaches_mbpo(monkeypatch):
    """MBPO_TOM hands each of MBPO's constructor arguments, as given, to ``MBPO.__init__`` and keeps its own."""
    import inspect

    from sb3_tom import MBPO

    names = [name for name in inspect.signature(MBPO.__init__).parameters if name != "self"]
    given = {name: object() for name in names}  # a distinct value each: a swapped or dropped argument shows
    received: dict = {}

    class Stop(Exception):
        pass

    def record(self, **kwargs):
        received.update(kwargs)
        raise Stop

    monkeypatch.setattr(MBPO, "__init__", record)
    with pytest.raises(Stop):
        MBPO_TOM(**given, policy_buffer_size=123, f_divergence="kl")
    assert received.keys() == given.keys()
    assert all(received[name] is given[name] for name in names)


@pytest.mark.parametrize("name", ["chi", "kl"])
def test_f_divergence_gradient_and_normalisation(name):
    """The weights are the derivative of the conjugate term (``f*'``), and normalised they have mean 1 on the buffer."""
    divergence = F_DIVERGENCES[name]
    e = (3 * th.randn(500, generator=th.Generator().manual_seed(0))).requires_grad_(True)
    (grad,) = th.autograd.grad(divergence.conjugate_mean(e), e)
    e = e.detach()
    if name == "chi":  # f*'(e) = e + 1, clipped at 0 for a weight
        th.testing.assert_close(grad * 500, e + 1)
        th.testing.assert_close(divergence.weights(e), th.relu(grad * 500))
    else:  # d/de log mean exp(e) = exp(e) / sum exp(e): the normalised weights over n
        th.testing.assert_close(grad * 500, divergence.normalized(e, divergence.reference(e)))
    w = divergence.normalized(e, divergence.reference(e))
    assert float(w.mean()) == pytest.approx(1.0, rel=1e-5)
    th.testing.assert_close(w / w.sum(), divergence.weights(e) / divergence.weights(e).sum())
    with pytest.raises(ValueError, match="one of"):
        get_f_divergence("js")
