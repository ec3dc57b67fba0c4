"""The chunked no-grad forward pass of the ensemble computes what the autograd forward pass computes."""

import pytest
import torch as th

from sb3_tom.dynamics.ensemble import GaussianEnsemble
from sb3_tom.tuning import INFERENCE_CHUNK_ROWS


@pytest.mark.parametrize("rows", [INFERENCE_CHUNK_ROWS + 1, 3 * INFERENCE_CHUNK_ROWS + 17])
@pytest.mark.parametrize("members", [None, [4, 0, 2]])
def test_chunked_inference_matches_forward(rows, members):
    th.manual_seed(0)
    model = GaussianEnsemble(5, 2, ensemble_size=5, num_elites=3, hidden_sizes=(16, 16))
    with th.no_grad():  # make the log-variance bounds bite
        model.max_logvar.fill_(0.1)
        model.min_logvar.fill_(-0.5)
    index = None if members is None else th.tensor(members)
    n_members = 5 if members is None else len(members)
    x = th.randn(n_members, rows, model.input_dim) * 3
    reference = model(x, index)  # grad enabled: the layer-by-layer path
    assert reference.mean.requires_grad
    with th.no_grad():
        chunked = model(x, index)
    assert not chunked.mean.requires_grad
    th.testing.assert_close(chunked.mean, reference.mean.detach(), atol=1e-6, rtol=1e-5)
    th.testing.assert_close(chunked.logvar, reference.logvar.detach(), atol=1e-6, rtol=1e-5)


def test_sample_uses_chunks_and_keeps_shapes(monkeypatch):
    th.manual_seed(0)
    model = GaussianEnsemble(4, 2, ensemble_size=3, num_elites=2, hidden_sizes=(8,))
    monkeypatch.setattr("sb3_tom.tuning.INFERENCE_CHUNK_ROWS", 7)
    obs, actions = th.randn(101, 4), th.randn(101, 2)
    th.manual_seed(1)
    next_obs, rewards = model.sample(obs, actions)
    monkeypatch.setattr("sb3_tom.tuning.INFERENCE_CHUNK_ROWS", 10**9)
    th.manual_seed(1)
    next_obs_ref, rewards_ref = model.sample(obs, actions)
    assert next_obs.shape == (101, 4) and rewards.shape == (101,)
    th.testing.assert_close(next_obs, next_obs_ref, atol=1e-6, rtol=1e-5)
    th.testing.assert_close(rewards, rewards_ref, atol=1e-6, rtol=1e-5)
