"""The fused SAC update computes what SB3's ``SAC.train`` computes."""

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3 import SAC
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.logger import configure
from stable_baselines3.common.type_aliases import ReplayBufferSamples

from sb3_tom import MBPO, kernels
from sb3_tom.buffers import MixedBatchSampler, ModelReplayBuffer, Transitions
from sb3_tom.kernels import AdamKernel
from sb3_tom.mbpo import fast_sac
from sb3_tom.mbpo.fast_sac import fast_sac_train, sample_batches
from sb3_tom.mbpo.mlp_sac import mlp_sac_supported

OBS_DIM, ACT_DIM, BATCH = 3, 1, 64


class FixedBatches:
    """Replay-buffer stand-in returning predetermined batches in order (consumes no random numbers)."""

    def __init__(self, batches: list[ReplayBufferSamples]) -> None:
        self.batches = batches
        self.calls = 0

    def sample(self, batch_size: int, env: object = None) -> ReplayBufferSamples:
        batch = self.batches[self.calls]
        assert batch.observations.shape[0] == batch_size
        self.calls += 1
        return batch


def make_batches(
    n: int, seed: int = 3, width: int = BATCH, obs_dim: int = OBS_DIM, act_dim: int = ACT_DIM
) -> list[ReplayBufferSamples]:
    gen = th.Generator().manual_seed(seed)
    return [
        ReplayBufferSamples(
            observations=th.randn(width, obs_dim, generator=gen),
            actions=th.rand(width, act_dim, generator=gen) * 2 - 1,
            next_observations=th.randn(width, obs_dim, generator=gen),
            dones=(th.rand(width, 1, generator=gen) < 0.2).float(),
            rewards=th.randn(width, 1, generator=gen),
        )
        for _ in range(n)
    ]


def twin_agents(width: int = 32, env_id: str = "Pendulum-v1", policy_kwargs: dict | None = None, **kwargs) -> tuple[SAC, SAC]:
    """Two SAC agents with identical networks, entropy coefficient and optimizer settings."""
    env = gym.make(env_id)
    policy_kwargs = policy_kwargs or dict(net_arch=[width, width])
    kwargs = dict(policy_kwargs=policy_kwargs, device="cpu", learning_starts=0, **kwargs)
    reference = SAC("MlpPolicy", env, seed=0, **kwargs)
    fast = SAC("MlpPolicy", env, seed=1, **kwargs)
    fast.policy.load_state_dict(reference.policy.state_dict())
    if reference.log_ent_coef is not None:
        with th.no_grad():
            fast.log_ent_coef.copy_(reference.log_ent_coef)
    for agent in (reference, fast):
        agent.set_logger(configure(None, [""]))
    return reference, fast


def assert_same_agents(reference: SAC, fast: SAC, atol: float, rtol: float) -> None:
    ref_state, fast_state = reference.policy.state_dict(), fast.policy.state_dict()
    assert ref_state.keys() == fast_state.keys()
    assert any(key.startswith("critic_target.") for key in ref_state)
    for key, value in ref_state.items():
        th.testing.assert_close(fast_state[key], value, atol=atol, rtol=rtol, msg=f"{key} differs")
    if reference.log_ent_coef is not None:
        th.testing.assert_close(fast.log_ent_coef, reference.log_ent_coef, atol=atol, rtol=rtol)
    else:
        th.testing.assert_close(fast.ent_coef_tensor, reference.ent_coef_tensor)
    assert fast._n_updates == reference._n_updates
    ref_log, fast_log = reference.logger.name_to_value, fast.logger.name_to_value
    assert ref_log.keys() == fast_log.keys()
    for key, value in ref_log.items():
        assert fast_log[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key


@pytest.mark.parametrize("ent_coef", ["auto", 0.1])
@pytest.mark.parametrize("target_update_interval", [1, 3])
@pytest.mark.parametrize(
    "hand_written, width", [(False, 32), (True, 32), (True, 256)], ids=["autograd", "hand-written", "hand-written-wide"]
)
def test_matches_sb3_sac_train(ent_coef, target_update_interval, hand_written, width):
    """
    256-unit layers take the oneDNN kernels of sb3_tom.kernels (where available), 32-unit ones torch.mm. The autograd
    step runs SB3's own operations and optimizer steps: its results agree with SB3's to the last bit on CPU.
    """
    exact = not hand_written
    reference, fast = twin_agents(width, ent_coef=ent_coef, target_update_interval=target_update_interval)
    assert mlp_sac_supported(fast)
    # Same weights to start with, and steps that really move them
    assert_same_agents(reference, fast, atol=0.0, rtol=0.0)
    batches = make_batches(10)
    reference.replay_buffer = FixedBatches(batches)  # type: ignore[assignment]
    fast_buffer = FixedBatches(batches)
    before = {k: v.clone() for k, v in reference.policy.state_dict().items()}
    # Same seed: the policy's reparameterisation noise is drawn in the same order by both
    for calls in range(2):  # two calls: the target-update counter restarts in each call, as in SB3
        th.manual_seed(42 + calls)
        reference.train(gradient_steps=5, batch_size=BATCH)
        th.manual_seed(42 + calls)
        fast_sac_train(fast, gradient_steps=5, batch_size=BATCH, buffer=fast_buffer, hand_written=hand_written)
        assert_same_agents(reference, fast, atol=0.0 if exact else 1e-5, rtol=0.0 if exact else 1e-4)
    assert fast_buffer.calls == 10
    after = reference.policy.state_dict()
    for prefix in ("actor.", "critic.", "critic_target."):
        assert any(not th.equal(before[k], after[k]) for k in after if k.startswith(prefix)), prefix
    if ent_coef == "auto":
        assert reference.logger.name_to_value["train/ent_coef"] != 1.0


@pytest.mark.parametrize(
    "policy_kwargs",
    [dict(net_arch=dict(pi=[64, 32], qf=[256, 48]), n_critics=3), dict(net_arch=dict(pi=[256, 256], qf=[40]), n_critics=1)],
    ids=["3-critics", "1-critic"],
)
@pytest.mark.parametrize("onednn", [False, True], ids=["blas", "onednn"])
def test_written_out_step_matches_autograd_definition_on_halfcheetah(policy_kwargs, onednn, monkeypatch):
    """
    The kept written-out SAC gradient (MLPSACStep) against the package's autograd definition (AutogradSACStep) and
    SB3's SAC.train, on HalfCheetah's spaces (17-D observations, 6-D actions), with other than two critics and
    distinct actor and critic architectures; with either matmul, whichever this CPU picks by default.
    """
    if onednn and not kernels.AVAILABLE["onednn"]:
        pytest.skip("this PyTorch build has no oneDNN linear op")
    monkeypatch.setitem(kernels._enabled, "onednn", onednn)
    reference, written = twin_agents(env_id="HalfCheetah-v4", policy_kwargs=policy_kwargs)
    _, autograd = twin_agents(env_id="HalfCheetah-v4", policy_kwargs=policy_kwargs)
    autograd.set_logger(configure(None, [""]))
    assert mlp_sac_supported(written) and len(written.critic.q_networks) == policy_kwargs["n_critics"]
    batches = make_batches(6, obs_dim=17, act_dim=6)
    reference.replay_buffer = FixedBatches(batches)  # type: ignore[assignment]
    for agent, hand_written in ((written, True), (autograd, False)):
        th.manual_seed(7)
        fast_sac_train(agent, gradient_steps=6, batch_size=BATCH, buffer=FixedBatches(batches), hand_written=hand_written)
    th.manual_seed(7)
    reference.train(gradient_steps=6, batch_size=BATCH)
    assert_same_agents(autograd, written, atol=1e-5, rtol=1e-4)
    assert_same_agents(reference, written, atol=1e-5, rtol=1e-4)
    assert not th.equal(
        reference.actor.mu.weight, twin_agents(env_id="HalfCheetah-v4", policy_kwargs=policy_kwargs)[0].actor.mu.weight
    )


def test_fast_kernels_off_takes_the_autograd_step(monkeypatch):
    """With SB3_TOM_FAST_KERNELS=0 (here: set_fast_kernels(False)) the written-out step is not used."""
    _, fast = twin_agents()
    used = []
    monkeypatch.setattr(fast_sac, "MLPSACStep", lambda model: used.append(model) or fast_sac.AutogradSACStep(model))
    monkeypatch.setitem(kernels._enabled, "fast", False)
    fast_sac_train(fast, 1, BATCH, FixedBatches(make_batches(1)))
    assert not used
    monkeypatch.setitem(kernels._enabled, "fast", True)
    fast_sac_train(fast, 1, BATCH, FixedBatches(make_batches(1)))
    assert used


def test_hand_written_step_falls_back_to_autograd():
    """Policies outside SB3's plain MLP family (here tanh activations, gSDE) take the autograd step."""
    env = gym.make("Pendulum-v1")
    tanh = SAC("MlpPolicy", env, policy_kwargs=dict(net_arch=[8], activation_fn=th.nn.Tanh), device="cpu")
    sde = SAC("MlpPolicy", env, use_sde=True, policy_kwargs=dict(net_arch=[8]), device="cpu")
    assert not mlp_sac_supported(tanh) and not mlp_sac_supported(sde)
    for agent in (tanh, sde):
        agent.set_logger(configure(None, [""]))
        before = [p.detach().clone() for p in agent.policy.parameters()]
        fast_sac_train(agent, 2, 16, FixedBatches(make_batches(2, width=16)))
        assert any(not th.equal(b, p) for b, p in zip(before, agent.policy.parameters(), strict=True))


@pytest.mark.parametrize(
    "optimizer_class, options",
    [(th.optim.Adam, {}), (th.optim.Adam, {"amsgrad": True, "weight_decay": 0.1}), (th.optim.AdamW, {})],
)
def test_adam_kernel_matches_optimizer_step(optimizer_class, options):
    gen = th.Generator().manual_seed(0)
    params = [th.nn.Parameter(th.randn(5, 3, generator=gen)), th.nn.Parameter(th.randn(3, generator=gen))]
    copies = [th.nn.Parameter(p.detach().clone()) for p in params]
    optimizer = optimizer_class(params, lr=1e-2, **options)
    reference = optimizer_class(copies, lr=1e-2, **options)
    kernel = AdamKernel(optimizer, params)
    for _ in range(4):
        grads = [th.randn(p.shape, generator=gen) for p in params]
        kernel.step(grads)
        for p, g in zip(copies, grads, strict=True):
            p.grad = g
        reference.step()
        for p, q in zip(params, copies, strict=True):
            th.testing.assert_close(p, q)
    # after the first step the direct kernel path ran (with the fast kernels on), else optimizer.step() every time
    assert (kernel._kernel is not None) == kernels.fast_kernels()
    assert all(p.grad is None for p in params)  # no stale gradient left on the parameters
    assert optimizer.state_dict()["state"][0]["step"] == 4


def test_sample_batches_plain_replay_buffer():
    obs_space = gym.spaces.Box(-1, 1, (OBS_DIM,), np.float32)
    act_space = gym.spaces.Box(-1, 1, (ACT_DIM,), np.float32)
    buffer = ReplayBuffer(100, obs_space, act_space, device="cpu")
    for i in range(50):
        obs = np.full((1, OBS_DIM), i, dtype=np.float32)
        buffer.add(obs, obs + 1, np.full((1, ACT_DIM), i / 100), np.array([i]), np.array([False]), [{}])
    batches = sample_batches(buffer, 4, 8)
    assert len(batches) == 4
    for batch in batches:
        assert batch.observations.shape == (8, OBS_DIM) and batch.rewards.shape == (8, 1)
        th.testing.assert_close(batch.next_observations, batch.observations + 1)
        th.testing.assert_close(batch.rewards[:, 0], batch.observations[:, 0])


def test_mixed_sampler_sample_many():
    obs_space = gym.spaces.Box(-10, 10, (OBS_DIM,), np.float32)
    act_space = gym.spaces.Box(-1, 1, (ACT_DIM,), np.float32)
    real = ReplayBuffer(100, obs_space, act_space, device="cpu")
    for _ in range(30):
        obs = np.full((1, OBS_DIM), 1.0, dtype=np.float32)
        real.add(obs, obs, np.zeros((1, ACT_DIM)), np.array([1.0]), np.array([False]), [{}])
    model = ModelReplayBuffer(50, OBS_DIM, ACT_DIM)
    sampler = MixedBatchSampler(real, model, real_ratio=0.25)
    only_real = sampler.sample_many(3, 8)
    assert only_real.observations.shape == (3, 8, OBS_DIM) and only_real.dones.shape == (3, 8, 1)
    assert bool((only_real.rewards == 1.0).all())
    n = 40
    model.add(Transitions(-th.ones(n, OBS_DIM), th.zeros(n, ACT_DIM), -th.ones(n), -th.ones(n, OBS_DIM), th.ones(n)))
    mixed = sampler.sample_many(5, 8)
    for name in ("observations", "next_observations", "rewards"):
        values = getattr(mixed, name)
        assert values.shape[:2] == (5, 8)
        assert bool((values[:, :2] == 1.0).all()) and bool((values[:, 2:] == -1.0).all()), name
    assert bool((mixed.dones[:, :2] == 0).all()) and bool((mixed.dones[:, 2:] == 1).all())
    # Same layout as sample()
    single = sampler.sample(8)
    assert single.observations.shape == mixed.observations[0].shape
    assert single.rewards.shape == mixed.rewards[0].shape and single.dones.shape == mixed.dones[0].shape


@pytest.mark.parametrize("fast_update", [True, False])
def test_mbpo_learns_with_either_update(fast_update):
    model = MBPO(
        "MlpPolicy",
        "Pendulum-v1",
        learning_starts=200,
        batch_size=32,
        gradient_steps=2,
        model_train_freq=100,
        rollout_batch_size=100,
        epoch_length=100,
        dynamics_hidden_sizes=(16, 16),
        model_max_epochs=2,
        policy_kwargs=dict(net_arch=[16, 16]),
        fast_update=fast_update,
        seed=0,
        device="cpu",
    )
    assert model.fast_update is fast_update
    model.learn(400)
    assert model._n_updates == 2 * (400 - 200)
    assert len(model.model_buffer) > 0
    action, _ = model.predict(np.zeros(3, dtype=np.float32), deterministic=True)
    assert action.shape == (1,)
