import numpy as np
import pytest
import torch as th
from conftest import env_transitions

from sb3_tom.dynamics.ensemble import GaussianEnsemble
from sb3_tom.dynamics.training import EnsembleTrainer, gaussian_nll, weighted_nll_loss
from sb3_tom.kernels import batched_matmul


def make_data(n: int, seed: int = 0, noise: float = 0.05):
    gen = th.Generator().manual_seed(seed)
    obs = th.rand(n, 2, generator=gen) * 4 - 2
    act = th.rand(n, 1, generator=gen) * 2 - 1
    delta = th.stack([th.sin(2 * obs[:, 0]) * act[:, 0], th.cos(obs[:, 1])], dim=1)
    reward = obs[:, 0] * obs[:, 1]
    next_obs = obs + delta + noise * th.randn(n, 2, generator=gen)
    reward = reward + noise * th.randn(n, generator=gen)
    return obs, act, reward, next_obs


def small_ensemble(seed: int = 0, **kwargs) -> GaussianEnsemble:
    th.manual_seed(seed)
    return GaussianEnsemble(2, 1, ensemble_size=kwargs.pop("ensemble_size", 5), num_elites=3, hidden_sizes=(64, 64), **kwargs)


def test_ensemble_fits_nonlinear_function():
    obs, act, rew, next_obs = make_data(4000)
    th.manual_seed(0)
    ens = GaussianEnsemble(2, 1, ensemble_size=5, num_elites=3, hidden_sizes=(128, 128))
    trainer = EnsembleTrainer(ens, batch_size=128, learning_rate=3e-3, patience=10, max_epochs=200)
    result = trainer.fit(obs, act, rew, next_obs)
    # the noise variance is 0.0025: the elites' holdout MSE gets within 2x of it
    assert result.holdout_mse < 0.005, result
    # and on fresh data, through the sampling API with the predicted mean
    t_obs, t_act, t_rew, t_next = make_data(1000, seed=1, noise=0.0)
    pred_next, pred_rew = ens.sample(t_obs, t_act, deterministic=True)
    assert th.mean((pred_next - t_next) ** 2) < 0.005
    assert th.mean((pred_rew - t_rew) ** 2) < 0.005
    # learned variance is close to the noise level (log 0.0025 = -6)
    _, logvar = ens.predict_all(t_obs, t_act)
    assert -8.0 < float(logvar[ens.elite_indices].mean().detach()) < -4.0


def spy(monkeypatch, trainer: EnsembleTrainer, name: str) -> list:
    """The values returned by every call of ``trainer.<name>`` from now on."""
    calls = []
    original = getattr(trainer, name)
    monkeypatch.setattr(trainer, name, lambda *args: (calls.append(original(*args)), calls[-1])[1])
    return calls


def test_bootstrap_is_per_member_and_holdout_disjoint(monkeypatch):
    obs, act, rew, next_obs = make_data(1000)
    ens = small_ensemble()
    trainer = EnsembleTrainer(ens, max_epochs=2)
    splits, rows = spy(monkeypatch, trainer, "_split"), spy(monkeypatch, trainer, "_training_rows")
    trainer.fit(obs, act, rew, next_obs)
    assert len(splits) == 1 and len(rows) == 1  # one bootstrap for the whole round
    boot = rows[0]
    hold = set(splits[0][0].tolist())
    assert boot.shape == (5, 800) and len(hold) == 200
    # sampled with replacement: about 63% unique per member, and members differ
    unique_fracs = [len(set(row.tolist())) / 800 for row in boot]
    assert all(0.55 < f < 0.72 for f in unique_fracs)
    assert not th.equal(boot[0], boot[1])
    assert all(hold.isdisjoint(row.tolist()) for row in boot)


def test_holdout_capped(monkeypatch):
    obs, act, rew, next_obs = make_data(1000)
    trainer = EnsembleTrainer(small_ensemble(), max_epochs=1, max_holdout=50)
    splits = spy(monkeypatch, trainer, "_split")
    trainer.fit(obs, act, rew, next_obs)
    assert len(splits[0][0]) == 50 and len(splits[0][1]) == 950


def test_elites_are_best_members_and_best_snapshots_restored():
    obs, act, rew, next_obs = make_data(2000)
    ens = small_ensemble()
    trainer = EnsembleTrainer(ens, max_epochs=30)
    result = trainer.fit(obs, act, rew, next_obs)
    mse = np.array(result.member_holdout_mse)
    assert sorted(result.elites) == sorted(np.argsort(mse)[:3].tolist())
    assert ens.elite_indices.tolist() == sorted(result.elites)
    assert result.holdout_mse == pytest.approx(mse[result.elites].mean(), rel=1e-5)
    # Sabotage member 0 so that it is the worst, retrain for one epoch: restoring best snapshots keeps
    # the trained members' quality and member 0 stops being an elite.
    with th.no_grad():
        for layer in ens.layers:
            layer.weight[0].normal_(0, 5.0)
    result2 = EnsembleTrainer(ens, max_epochs=1).fit(obs, act, rew, next_obs)
    assert 0 not in result2.elites


def test_weighted_nll_matches_formula():
    th.manual_seed(0)
    mean, logvar, target = th.randn(3, 16, 4), th.randn(3, 16, 4), th.randn(3, 16, 4)
    weight = th.rand(16) * 3
    expected = 0.0
    for m in range(3):
        per_sample = ((mean[m] - target[m]) ** 2 * th.exp(-logvar[m]) + logvar[m]).mean(dim=1)
        expected += float((weight * per_sample).sum() / 16)
    assert float(weighted_nll_loss(mean, logvar, target, weight)) == pytest.approx(expected, rel=1e-5)
    # unit weights reduce to plain maximum likelihood
    assert float(weighted_nll_loss(mean, logvar, target, th.ones(16))) == pytest.approx(
        float(weighted_nll_loss(mean, logvar, target)), rel=1e-6
    )
    assert gaussian_nll(mean, logvar, target).shape == (3, 16)


def test_training_loss_is_the_reference_objective():
    """EnsembleTrainer.loss is the weighted NLL of every member plus the log-variance bound penalty and weight decay."""
    th.manual_seed(0)
    trainer = EnsembleTrainer(GaussianEnsemble(5, 2, ensemble_size=3, num_elites=2, hidden_sizes=(16, 16)))
    ensemble = trainer.ensemble
    inputs, targets, weight = th.randn(3, 32, 7), 2 * th.randn(3, 32, 6), 2 * th.rand(3, 32)
    with th.no_grad():
        mean, logvar = ensemble(inputs)
        nll = weighted_nll_loss(mean, logvar, targets, weight)
        layers = [*ensemble.layers, ensemble.output_layer]
        decay = sum(d * 0.5 * (layer.weight**2).sum() for d, layer in zip(ensemble.weight_decays, layers, strict=True))
        expected = nll + 0.01 * (ensemble.max_logvar.sum() - ensemble.min_logvar.sum()) + decay
        assert float(trainer.loss(inputs, targets, weight)) == pytest.approx(float(expected), rel=1e-6)


def test_sample_weight_validation():
    obs, act, rew, next_obs = make_data(100)
    trainer = EnsembleTrainer(small_ensemble(), max_epochs=1)
    with pytest.raises(ValueError, match="entries"):
        trainer.fit(obs, act, rew, next_obs, sample_weight=th.ones(3))
    with pytest.raises(ValueError, match="non-negative"):
        trainer.fit(obs, act, rew, next_obs, sample_weight=-th.ones(100))


def test_sample_uses_only_elites_and_covers_every_sample():
    ens = small_ensemble()
    with th.no_grad():  # make each member output a constant equal to its index
        for layer in [*ens.layers, ens.output_layer]:
            layer.weight.zero_()
        ens.output_layer.bias.zero_()
        ens.output_layer.bias[:, :, 0] = th.arange(5.0).view(5, 1)
    ens.elite_indices.copy_(th.tensor([1, 3, 4]))
    obs, act = th.zeros(101, 2), th.zeros(101, 1)
    _, reward = ens.sample(obs, act, deterministic=True)
    values = set(reward.tolist())
    assert values <= {1.0, 3.0, 4.0} and len(values) == 3


def test_normaliser_saved_in_state_dict():
    ens = small_ensemble()
    obs, act, rew, next_obs = make_data(500)
    EnsembleTrainer(ens, max_epochs=1).fit(obs, act, rew, next_obs)
    state = ens.state_dict()
    assert {"input_mean", "input_std", "elite_indices", "max_logvar", "min_logvar"} <= set(state)
    fresh = small_ensemble(seed=1)
    fresh.load_state_dict(state)
    a, _ = ens.predict_all(obs[:10], act[:10])
    b, _ = fresh.predict_all(obs[:10], act[:10])
    assert th.allclose(a, b)


def test_input_normalizer_leaves_out_holdout_rows_in_chunks(monkeypatch):
    monkeypatch.setattr("sb3_tom.tuning.STATISTICS_CHUNK_ROWS", 7)  # several chunks, a ragged last one
    gen = th.Generator().manual_seed(0)
    inputs = th.randn(50, 3, generator=gen) * th.tensor([1.0, 100.0, 1e-3]) + th.tensor([5.0, -300.0, 2.0])
    inputs[:, 2] = 2.0  # a constant input gets std 1, not 0
    holdout = th.tensor([3, 17, 41])
    keep = th.ones(50, dtype=th.bool)
    keep[holdout] = False
    ens = GaussianEnsemble(2, 1, ensemble_size=2, num_elites=1, hidden_sizes=(8,))
    ens.fit_input_normalizer(inputs, exclude=holdout)
    expected_std = inputs[keep].double().std(0)
    expected_std[2] = 1.0
    th.testing.assert_close(ens.input_mean.double(), inputs[keep].double().mean(0), rtol=1e-6, atol=1e-6)
    th.testing.assert_close(ens.input_std.double(), expected_std, rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match="at least 2"):
        ens.fit_input_normalizer(inputs[:3], exclude=th.tensor([0, 1]))


def test_input_normalizer_keeps_a_column_constant_on_the_training_rows_unscaled():
    """
    A rare column (e.g. a contact force of Humanoid's 376-D observation) that is zero on every training row and
    non-zero only on holdout rows is constant where the statistics are taken: its std must be exactly 1. Taking the
    holdout's sums away from the whole buffer's leaves rounding residue (std ~1e-10), which scales it by ~1e10.
    """
    gen = th.Generator().manual_seed(0)
    rows, hold = 10_000, 2_000
    inputs = th.randn(rows, 4, generator=gen)
    holdout = th.randperm(rows, generator=gen)[:hold]
    for trial in range(40):
        inputs[:, 3] = 0.0
        rare = holdout[th.randperm(hold, generator=gen)[: 5 + trial % 25]]
        inputs[rare, 3] = 0.3 * th.randn(len(rare), generator=gen) * 10.0 ** th.randint(-3, 3, (len(rare),), generator=gen)
        ens = GaussianEnsemble(2, 2, ensemble_size=2, num_elites=1, hidden_sizes=(8,))
        ens.fit_input_normalizer(inputs, exclude=holdout)
        assert ens.input_std[3].item() == 1.0 and ens.input_mean[3].item() == 0.0, (trial, ens.input_std[3].item())
        assert th.all(ens.input_std[:3] > 0.9)


def test_input_normalizer_on_real_ant_observations_with_rare_contact_columns():
    """
    Real Ant-v5 data (105-D observations with contact forces, 8-D actions): columns that are non-zero on a few rows
    only, all put in the holdout, are constant on the training rows and get std exactly 1; every other column gets
    the training rows' own std.
    """
    obs, act, _, _, _ = env_transitions("Ant-v5", 2000, seed=0)
    inputs = th.cat([obs, act], dim=1)
    nonzero = inputs != 0
    rare = (nonzero.sum(0) > 0) & (nonzero.sum(0) <= 200)
    assert int(rare.sum()) >= 3, int(rare.sum())  # the case this test is about occurs in the real data
    gen = th.Generator().manual_seed(0)
    holdout = th.unique(th.cat([th.randperm(2000, generator=gen)[:300], nonzero[:, rare].any(1).nonzero()[:, 0]]))
    keep = th.ones(2000, dtype=th.bool)
    keep[holdout] = False
    ens = GaussianEnsemble(105, 8, ensemble_size=2, num_elites=1, hidden_sizes=(8,))
    ens.fit_input_normalizer(inputs, exclude=holdout)
    expected = inputs[keep].double().std(0)
    expected[expected == 0] = 1.0
    assert bool((ens.input_std[rare] == 1.0).all())
    th.testing.assert_close(ens.input_std.double(), expected, rtol=1e-5, atol=0.0)


def test_targets_and_bootstrap_mapping_in_blocks(monkeypatch):
    monkeypatch.setattr("sb3_tom.tuning.BOOTSTRAP_BLOCK_COLUMNS", 64)  # many column blocks
    obs, act, rew, next_obs = make_data(300)
    targets = EnsembleTrainer.make_targets(obs, rew, next_obs)
    th.testing.assert_close(targets, th.cat([rew[:, None], next_obs - obs], dim=1))
    trainer = EnsembleTrainer(small_ensemble(), max_epochs=1)
    splits, rows = spy(monkeypatch, trainer, "_split"), spy(monkeypatch, trainer, "_training_rows")
    trainer.fit(obs, act, rew, next_obs)
    train_rows = set(range(300)) - set(splits[0][0].tolist())
    # every bootstrap entry is a training row, and draws cover the training rows of every block
    assert set(rows[0].flatten().tolist()) <= train_rows
    assert len(set(rows[0][:, -64:].flatten().tolist())) > 150


@pytest.mark.parametrize("batch", [1, 2, 5, 7])
def test_batched_matmul_matches_baddbmm(batch: int):
    """The thread-balanced split computes what one baddbmm / bmm call computes, for any batch size."""
    gen = th.Generator().manual_seed(batch)
    a, b = th.randn(batch, 33, 20, generator=gen), th.randn(batch, 20, 9, generator=gen)
    bias = th.randn(batch, 1, 9, generator=gen)
    threads = th.get_num_threads()
    try:
        th.set_num_threads(2)
        assert th.allclose(batched_matmul(a, b), th.bmm(a, b), rtol=1e-6, atol=1e-6)
        assert th.allclose(batched_matmul(a, b, bias), th.baddbmm(bias, a, b), rtol=1e-6, atol=1e-6)
        grad = th.randn(batch, 33, 9, generator=gen)  # a transposed operand, as in a weight gradient
        assert th.allclose(batched_matmul(a.transpose(1, 2), grad), th.bmm(a.transpose(1, 2), grad), rtol=1e-6, atol=1e-6)
    finally:
        th.set_num_threads(threads)


def test_ensemble_forward_same_with_and_without_autograd():
    """No-grad forward passes (rollouts, holdout evaluation) use the split matmuls; values are those of the graph path."""
    ensemble = small_ensemble()
    x = th.randn(ensemble.ensemble_size, 40, ensemble.input_dim)
    with_grad = ensemble(x)
    with th.no_grad():
        without = ensemble(x)
    assert th.allclose(with_grad.mean.detach(), without.mean, atol=1e-6)
    assert th.allclose(with_grad.logvar.detach(), without.logvar, atol=1e-6)


# ---------------------------------------------------------------- early stopping as MBPO does it
def scripted_holdout(monkeypatch, trainer: EnsembleTrainer, script):
    """
    Replace the holdout evaluation by ``script(call)`` (per-member MSEs of the ``call``-th evaluation, 0 = the first
    epoch's) and record a copy of the ensemble's state at every evaluation (i.e. after every epoch).
    """
    states = []

    def evaluate(inputs, targets, weights):
        states.append({k: v.detach().clone() for k, v in trainer.ensemble.state_dict().items()})
        mse = th.as_tensor(script(len(states) - 1), dtype=th.float32)
        return mse, mse

    monkeypatch.setattr(trainer, "_evaluate", evaluate)
    return states


def test_early_stopping_waits_more_than_patience_epochs_and_first_epoch_counts(monkeypatch):
    """
    MBPO resets every snapshot to (none, +inf) at the start of a round, so the first epoch always improves, and stops
    once ``epochs_since_update > patience``: with a holdout error that never improves after epoch 1, a round runs
    1 + patience + 1 epochs and every member ends as it was after epoch 1; the shared log-variance bounds, which are
    no member's, keep their last value (MBPO's snapshots hold the members' layers only).
    """
    obs, act, rew, next_obs = make_data(1000)
    ens = small_ensemble()
    trainer = EnsembleTrainer(ens, patience=5)
    states = scripted_holdout(monkeypatch, trainer, lambda call: [1.0] * 5)
    result = trainer.fit(obs, act, rew, next_obs)
    assert result.epochs == 7
    for name, value in ens.state_dict().items():
        if name in ("max_logvar", "min_logvar"):
            last_epoch = states[result.epochs - 1][name]  # (the evaluation after the restore comes last)
            assert th.equal(value, last_epoch) and not th.equal(value, states[0][name]), name
        elif name not in ("elite_indices", "trained"):
            assert th.equal(value, states[0][name]), name


def test_each_member_restored_to_its_own_best_epoch_and_bounds_kept_at_their_last_value(monkeypatch):
    obs, act, rew, next_obs = make_data(1000)
    ens = small_ensemble()
    trainer = EnsembleTrainer(ens, patience=2)
    # member m improves for the last time in epoch m + 1 (evaluation m); member 4 only in the first epoch
    mse = {0: [1.0] * 5, 1: [1.0, 0.5, 0.5, 0.5, 1.0], 2: [1.0, 0.5, 0.4, 0.4, 1.0]}
    states = scripted_holdout(monkeypatch, trainer, lambda call: mse.get(call, [1.0, 0.5, 0.4, 0.3, 1.0]))
    epochs = trainer.fit(obs, act, rew, next_obs).epochs
    assert epochs == 4 + 3
    for name, param in ens.named_parameters():
        if param.shape[0] == ens.ensemble_size:
            for member, best_call in enumerate([0, 1, 2, 3, 0]):
                assert th.equal(param[member], states[best_call][name][member]), (name, member)
        else:  # shared log-variance bounds: as trained to the last epoch, as in MBPO
            assert th.equal(param, states[epochs - 1][name]) and not th.equal(param, states[3][name]), name


def test_real_halfcheetah_round_keeps_the_bounds_of_its_last_epoch():
    """
    On real HalfCheetah-v4 data (17-D observations with near-constant entries, 6-D actions) a round ends with every
    member at its best epoch and the shared log-variance bounds as the last epoch left them (MBPO's snapshots).
    """
    th.manual_seed(0)
    data = env_transitions("HalfCheetah-v4", 2000, seed=0)[:4]
    ens = GaussianEnsemble(17, 6, ensemble_size=5, num_elites=3, hidden_sizes=(64, 64))
    trainer = EnsembleTrainer(ens, patience=2, max_epochs=40)
    bounds = []
    evaluate = trainer._evaluate

    def recording(*args):
        bounds.append((ens.max_logvar.detach().clone(), ens.min_logvar.detach().clone()))
        return evaluate(*args)

    trainer._evaluate = recording  # type: ignore[method-assign]
    result = trainer.fit(*data)
    last_epoch = bounds[result.epochs - 1]
    assert th.equal(ens.max_logvar, last_epoch[0]) and th.equal(ens.min_logvar, last_epoch[1])
    assert not th.equal(ens.max_logvar, bounds[0][0])  # they did move during the round


def test_resample_with_weights_whose_sum_overflows(monkeypatch):
    """
    KL's raw weights, unclipped (``weight_clip=None``), reach the largest finite float where ``exp(e)`` overflows:
    their sum is infinite. The draws must still be ∝ the weights (``th.multinomial`` silently draws a wrong row
    then) and the weighted holdout error finite, so that early stopping and the elites mean something.
    """
    obs, act, rew, next_obs = make_data(1000)
    weights = th.ones(1000)
    heavy = th.arange(0, 1000, 100)  # 10 rows
    weights[heavy] = th.finfo(th.float32).max
    trainer = EnsembleTrainer(small_ensemble(), max_epochs=2)
    draws = spy(monkeypatch, trainer, "_training_rows")
    result = trainer.fit(obs, act, rew, next_obs, sample_weight=weights, resample=True)
    drawn = th.cat(draws).flatten()
    assert bool(th.isin(drawn, heavy).all()), drawn.unique()[:20]
    assert len(drawn.unique()) > 1  # all the heavy training rows, not one
    assert np.isfinite(result.holdout_mse) and all(np.isfinite(result.member_holdout_mse))


def test_resample_fits_the_weighted_part_of_real_hopper_data():
    """
    The official resampling scheme on real Hopper-v4 data (11-D observations, 3-D actions): with all weight on the
    transitions of one action distribution, the model ends up fitting those better than the zero-weight ones it
    never trained on, within the official 30 epochs of 100 minibatches.
    """
    th.manual_seed(0)
    wanted = env_transitions("Hopper-v4", 1500, action_mean=0.5, action_std=0.3, seed=0)[:4]
    other = env_transitions("Hopper-v4", 1500, action_mean=-0.5, action_std=0.3, seed=1)[:4]
    data = [th.cat(x) for x in zip(wanted, other, strict=True)]
    weights = th.cat([th.ones(1500), th.zeros(1500)])
    ens = GaussianEnsemble(11, 3, ensemble_size=5, num_elites=3, hidden_sizes=(64, 64))
    result = EnsembleTrainer(ens).fit(*data, sample_weight=weights, resample=True)
    assert 1 <= result.epochs <= 30 and np.isfinite(result.holdout_mse)

    def error(obs, act, rew, next_obs):
        mean, _ = ens.predict_all(obs, act)
        target = EnsembleTrainer.make_targets(obs, rew, next_obs)
        normalised = (mean - target) / target.std(0)  # every target dimension counts alike
        return float(normalised[ens.elite_indices].pow(2).mean())

    with th.no_grad():
        assert error(*wanted) < 0.7 * error(*other), (error(*wanted), error(*other))


def test_warm_started_rounds_adapt_every_member_to_new_data():
    """
    A warm-started round must keep its own training (real HalfCheetah-v4 data: 17-D observations, 6-D actions): after
    each round on a buffer that grew by 250 transitions of a new action distribution, no member is left at its
    pre-round weights and the error on the newest data went down.
    """
    th.manual_seed(0)
    data = [env_transitions("HalfCheetah-v4", 3000, seed=0)[:4]]
    ens = GaussianEnsemble(17, 6, ensemble_size=7, num_elites=5, hidden_sizes=(64, 64, 64, 64))
    trainer = EnsembleTrainer(ens, max_epochs=100)
    trainer.fit(*(th.cat(x) for x in zip(*data, strict=True)))
    for round_ in range(3):
        new = env_transitions("HalfCheetah-v4", 250, action_mean=0.2 * (round_ + 1), action_std=0.5, seed=round_ + 1)[:4]
        data.append(new)
        new_obs, new_act, new_rew, new_next = new
        targets = EnsembleTrainer.make_targets(new_obs, new_rew, new_next)

        def error_on_new(obs=new_obs, act=new_act, targets=targets) -> float:
            with th.no_grad():
                mean, _ = ens.predict_all(obs, act)
            return float(((mean - targets) ** 2).mean())

        before = [p.detach().clone() for p in ens.parameters()]
        error_before = error_on_new()
        trainer.fit(*(th.cat(x) for x in zip(*data, strict=True)))
        for p, q in zip(ens.parameters(), before, strict=True):
            if p.shape[0] == ens.ensemble_size:
                reverted = [m for m in range(ens.ensemble_size) if th.equal(p[m], q[m])]
                assert not reverted, f"round {round_}: members {reverted} reverted to their pre-round weights"
        assert error_on_new() < 0.99 * error_before, (round_, error_on_new(), error_before)


def test_resample_draws_the_holdout_first_weights_it_and_redraws_training_rows_each_epoch(monkeypatch):
    """
    TOM's official scheme: a 10% holdout drawn first, no row both holdout and training, zero-weight rows never train,
    every epoch 100 new minibatches per member drawn ∝ the weights, at most 30 epochs.
    """
    obs, act, rew, next_obs = make_data(1000)
    weights = th.ones(1000)
    weights[::2] = 0.0  # even rows: never trained on
    weights[1::4] = 9.0
    ens = small_ensemble()
    trainer = EnsembleTrainer(ens, max_epochs=3)
    splits, draws = spy(monkeypatch, trainer, "_split"), spy(monkeypatch, trainer, "_training_rows")
    evaluated = []
    original_evaluate = trainer._evaluate
    monkeypatch.setattr(trainer, "_evaluate", lambda i, t, w: (evaluated.append(w), original_evaluate(i, t, w))[1])
    trainer.fit(obs, act, rew, next_obs, sample_weight=weights, resample=True)
    assert len(draws) == 3 and not th.equal(draws[0], draws[1])
    trained = draws[-1]
    hold = splits[0][0]
    assert len(hold) == 100 and trained.shape == (5, 100 * trainer.batch_size)
    assert not (set(th.cat(draws).flatten().tolist()) & set(hold.tolist()))
    assert bool((th.cat(draws) % 2 == 1).all())
    # rows of weight 9 are drawn about 9x as often as rows of weight 1
    heavy = float((trained % 4 == 1).float().mean())
    assert 0.85 < heavy < 0.95, heavy
    # the holdout error is weighted by the holdout rows' weights
    assert all(th.equal(w, weights[hold]) for w in evaluated)
    with pytest.raises(ValueError, match="needs a sample_weight"):
        trainer.fit(obs, act, rew, next_obs, resample=True)
    # without a cap of its own the trainer stops at the official 30 epochs (here every epoch counts as progress)
    endless = EnsembleTrainer(small_ensemble(), batch_size=8, improvement_threshold=-1e9)
    assert endless.fit(obs, act, rew, next_obs, sample_weight=weights, resample=True).epochs == 30
    endless.max_epochs = 35  # MBPO's own scheme has no such cap
    assert endless.fit(obs, act, rew, next_obs).epochs == 35


@pytest.mark.parametrize("resample", [False, True])
def test_holdout_weight_ess_is_reported(monkeypatch, resample):
    """
    How many holdout transitions the weighted early stopping effectively rests on: the Kish ESS ``(sum w)^2 / sum w^2``
    of the holdout's weights, on HalfCheetah-v4 transitions (17-D observations, 6-D actions) with TOM-like weights that
    favour the newest rows; the holdout's size without weights.
    """
    obs, act, rew, next_obs, _ = env_transitions("HalfCheetah-v4", 1500)
    weights = th.linspace(0.0, 3.0, len(obs)) ** 2  # old rows weigh little, new ones much
    th.manual_seed(0)
    ensemble = GaussianEnsemble(17, 6, ensemble_size=3, num_elites=2, hidden_sizes=(32, 32))
    trainer = EnsembleTrainer(ensemble, max_epochs=1)
    splits = spy(monkeypatch, trainer, "_split")
    result = trainer.fit(obs, act, rew, next_obs, sample_weight=weights, resample=resample)
    hold = weights[splits[0][0]]
    expected = float(hold.sum() ** 2 / (hold**2).sum())
    assert result.holdout_weight_ess == pytest.approx(expected, rel=1e-5)
    assert 0.5 * len(hold) < result.holdout_weight_ess < 0.8 * len(hold)  # these weights cost 20-50% of the holdout
    unweighted = trainer.fit(obs, act, rew, next_obs)
    assert unweighted.holdout_weight_ess == len(splits[1][0])
