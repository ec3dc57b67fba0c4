import gymnasium as gym
import numpy as np
import pytest
import torch as th
from conftest import TINY_MBPO
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import VecMonitor, VecNormalize

from sb3_tom import MBPO
from sb3_tom.buffers import (
    MixedBatchSampler,
    ModelReplayBuffer,
    Transitions,
    chronological_indices,
    end_last_episode,
    real_buffer_size,
    real_transitions,
)
from sb3_tom.mbpo.schedule import rollout_length_at
from sb3_tom.tom.start_states import episode_start_mask

HOPPER_OBS_DIM = 11  # Hopper-v4's observation size

# Tiny settings so that a few hundred steps run in seconds
FAST = dict(**TINY_MBPO, learning_starts=100, model_train_freq=100, rollout_batch_size=200, model_max_epochs=5)


def fast_mbpo(env="Pendulum-v1", **kwargs):
    params = {**FAST, **kwargs}
    return MBPO("MlpPolicy", env, **params)


def transitions(n, obs_dim, act_dim, value):
    return Transitions(
        th.full((n, obs_dim), float(value)),
        th.full((n, act_dim), float(value)),
        th.full((n,), float(value)),
        th.full((n, obs_dim), float(value)),
        th.zeros(n),
    )


# ---------------------------------------------------------------- buffers
def test_model_buffer_wraps_and_keeps_latest():
    buf = ModelReplayBuffer(10, 2, 1)
    buf.add(transitions(7, 2, 1, 1))
    buf.add(transitions(6, 2, 1, 2))
    assert len(buf) == 10
    rewards = buf.all().rewards
    assert rewards.tolist() == [1.0] * 4 + [2.0] * 6  # oldest first
    buf.add(transitions(25, 2, 1, 3))  # more than capacity at once
    assert buf.all().rewards.tolist() == [3.0] * 10
    small = buf.resized(4)
    assert small.capacity == 4 and len(small) == 4


@pytest.mark.parametrize("optimize_memory_usage", [False, True])
def test_real_transitions_read_in_float32_chunks(monkeypatch, optimize_memory_usage):
    monkeypatch.setattr("sb3_tom.tuning.GATHER_CHUNK_ROWS", 4)  # several chunks, a ragged last one
    obs_space = spaces.Box(-np.inf, np.inf, (3,), np.float64)
    act_space = spaces.Box(-1, 1, (2,), np.float32)
    # SB3 cannot track truncations with optimize_memory_usage: every done is a terminal then
    handle_timeouts = not optimize_memory_usage
    buffer = ReplayBuffer(
        20, obs_space, act_space, optimize_memory_usage=optimize_memory_usage, handle_timeout_termination=handle_timeouts
    )
    rng = np.random.default_rng(0)
    obs = rng.standard_normal((12, 3))
    for t in range(11):
        done = t in (4, 9)
        info = [{"TimeLimit.truncated": t == 9}]
        buffer.add(obs[t], obs[t + 1], rng.uniform(-1, 1, 2), np.array([t]), np.array([done]), info)
    indices = np.array([10, 0, 4, 9, 3, 3, 7])[: buffer.pos]
    data = real_transitions(buffer, "cpu", indices)
    assert data.observations.dtype == th.float32 and data.observations.shape == (7, 3)
    np.testing.assert_allclose(data.observations.numpy(), obs[indices].astype(np.float32))
    np.testing.assert_allclose(data.next_observations.numpy(), obs[indices + 1].astype(np.float32))
    np.testing.assert_allclose(data.actions.numpy(), buffer.actions[indices, 0])
    assert data.rewards.tolist() == indices.tolist()
    # step 9 was a truncation, not a terminal
    assert data.terminated.tolist() == [0, 0, 1, int(not handle_timeouts), 0, 0, 0]
    assert data.episode_ends is not None and data.episode_ends.tolist() == [0, 0, 1, 1, 0, 0, 0]


@pytest.mark.parametrize("optimize_memory_usage", [False, True])
def test_end_last_episode_marks_only_an_unfinished_newest_transition(optimize_memory_usage):
    space = spaces.Box(-1, 1, (2,), np.float32)
    buffer = ReplayBuffer(4, space, space, optimize_memory_usage=optimize_memory_usage, handle_timeout_termination=False)
    end_last_episode(buffer)  # empty: nothing to mark
    assert buffer.dones.sum() == 0
    for t in range(5):  # wraps: the newest transition is row 0
        buffer.add(np.zeros(2), np.zeros(2), np.zeros(2), np.array([t]), np.array([t == 1]), [{}])
    end_last_episode(buffer)
    ends = real_transitions(buffer, "cpu", np.arange(4))  # storage order
    assert ends.episode_ends is not None and ends.episode_ends.tolist() == [1, 1, 0, 0]
    # a cut episode is a truncation; with optimize_memory_usage (next observation overwritten) a terminal, as in SB3
    assert ends.terminated.tolist() == [int(optimize_memory_usage), 1, 0, 0]
    end_last_episode(buffer)  # already an episode end: unchanged
    assert buffer.dones[:, 0].tolist() == [1, 1, 0, 0] and buffer.timeouts.sum() == int(not optimize_memory_usage)


@pytest.mark.parametrize("optimize_memory_usage", [False, True])
def test_a_full_buffer_never_yields_the_row_sb3_has_overwritten(optimize_memory_usage):
    """
    With ``optimize_memory_usage`` SB3 keeps each next observation as the following row's observation, so in a full
    buffer the oldest row (at ``pos``) already holds the newest next observation beside its old action and reward:
    SB3 never samples it, and neither may the model's training data, TOM's pools or SAC's real batches.
    """
    space = spaces.Box(-np.inf, np.inf, (HOPPER_OBS_DIM,), np.float32)
    act_space = spaces.Box(-1, 1, (3,), np.float32)
    buffer = ReplayBuffer(8, space, act_space, optimize_memory_usage=optimize_memory_usage, handle_timeout_termination=False)
    for t in range(11):  # wraps: pos = 3
        obs = np.full(HOPPER_OBS_DIM, float(t))
        buffer.add(obs, obs + 1, np.full(3, 0.1 * t), np.array([t]), np.array([False]), [{}])
    order = chronological_indices(buffer)
    data = real_transitions(buffer, "cpu", order)
    assert th.equal(data.next_observations - data.observations, th.ones_like(data.observations))
    assert data.rewards.tolist() == list(range(11 - len(order), 11))  # oldest first, newest last
    assert real_buffer_size(buffer) == len(order) == 8 - int(optimize_memory_usage)
    assert th.equal(real_transitions(buffer, "cpu").rewards, data.rewards)  # the default: the same rows

    np.random.seed(0)
    sampler = MixedBatchSampler(buffer, ModelReplayBuffer(10, HOPPER_OBS_DIM, 3), real_ratio=0.05)
    for batch in (sampler.sample(4096), sampler.sample_many(8, 512)):
        rewards, obs, next_obs = batch.rewards.reshape(-1), batch.observations, batch.next_observations
        assert th.equal(next_obs - obs, th.ones_like(obs))  # only consistent rows
        assert set(rewards.tolist()) == set(data.rewards.tolist())  # every usable row, uniformly reachable


def test_mixed_batches_have_exact_real_count():
    model = fast_mbpo()
    model.learn(150)
    model_buffer = ModelReplayBuffer(500, 3, 1)
    model_buffer.add(transitions(300, 3, 1, 1e6))  # model data is marked
    sampler = MixedBatchSampler(model.replay_buffer, model_buffer, real_ratio=0.05)
    for batch_size in (256, 64, 100):
        batch = sampler.sample(batch_size)
        n_model = int((batch.rewards == 1e6).sum())
        assert batch_size - n_model == {256: 12, 64: 3, 100: 5}[batch_size]  # int(), as MBPO: 12 of 256, not 13
        assert batch.observations.shape == (batch_size, 3)
        assert batch.dones.shape == (batch_size, 1)


@pytest.mark.parametrize("fast_update", [True, False])
def test_real_ratio_zero_trains_on_model_transitions_only(fast_update):
    """``real_ratio=0`` (allowed, as in MBPO's config) gives all-model batches and trains, on Hopper's spaces."""
    model = fast_mbpo("Hopper-v4", real_ratio=0.0, fast_update=fast_update)
    model.learn(250)
    assert len(model.model_buffer) > 0 and model.logger.name_to_value["train/critic_loss"] != 0
    model_buffer = ModelReplayBuffer(500, HOPPER_OBS_DIM, 3)
    model_buffer.add(transitions(300, HOPPER_OBS_DIM, 3, 1e6))  # model data is marked
    sampler = MixedBatchSampler(model.replay_buffer, model_buffer, real_ratio=0.0)
    batch, batches = sampler.sample(64), sampler.sample_many(3, 64)
    assert batch.observations.shape == (64, HOPPER_OBS_DIM) and bool((batch.rewards == 1e6).all())
    assert batches.observations.shape == (3, 64, HOPPER_OBS_DIM) and bool((batches.rewards == 1e6).all())


def test_mixing_is_all_real_while_model_buffer_empty():
    model = fast_mbpo()
    model.learn(50)
    empty = ModelReplayBuffer(10, 3, 1)
    assert MixedBatchSampler(model.replay_buffer, empty, 0.05).n_real(256) == 256


def test_rollout_schedule_and_buffer_capacity():
    """
    As MBPO: the schedule's epoch is an integer that starts at 0 after the initial exploration
    (``(num_timesteps - learning_starts) // epoch_length``), and the model buffer holds
    ``retain * int(k * rollout_batch_size * epoch_length / model_train_freq)`` transitions.
    """
    assert rollout_length_at([20, 100, 1, 25], 0) == 1
    assert rollout_length_at([20, 100, 1, 25], 55) == 11
    assert rollout_length_at([20, 100, 1, 25], 500) == 25
    model = MBPO("MlpPolicy", "Pendulum-v1", rollout_length=[20, 100, 1, 25], rollout_batch_size=1000, model_retain_epochs=2)
    assert model.learning_starts == 5000
    assert model.model_buffer.capacity == 2 * 1 * 1000 * 4
    for steps, epoch, k in [(4000, 0, 1), (25_999, 20, 1), (60_000, 55, 11), (60_999, 55, 11), (105_000, 100, 25)]:
        model.num_timesteps = steps
        assert (model.epoch, model.current_rollout_length) == (epoch, k), steps
    assert model._model_buffer_capacity(11) == 2 * 11 * 1000 * 4
    odd = MBPO("MlpPolicy", "Pendulum-v1", rollout_length=3, rollout_batch_size=333, model_train_freq=300)
    assert odd.model_buffer.capacity == int(3 * 333 * 1000 / 300)


def test_model_buffer_resized_when_rollout_length_changes():
    model = fast_mbpo(rollout_length=[0, 2, 1, 3], epoch_length=100)
    model.learn(400)
    assert model.current_rollout_length == 3
    assert model.model_buffer.capacity == 3 * 200 * 1
    assert len(model.model_buffer) > 200


# ---------------------------------------------------------------- loop & logging
class KeyRecorder(BaseCallback):
    def __init__(self):
        super().__init__()
        self.keys = set()

    def _on_step(self) -> bool:
        self.keys |= set(self.model.logger.name_to_value)
        return True


def test_learn_logs_model_and_rollout_keys(tmp_path):
    model = fast_mbpo(tensorboard_log=str(tmp_path))
    recorder = KeyRecorder()
    model.learn(350, callback=recorder, progress_bar=True)
    expected = {
        "model/holdout_mse",
        "model/holdout_nll",
        "model/holdout_weight_ess",
        "model/epochs",
        "model/train_seconds",
        "model/elites",
        "rollout/model_buffer_size",
        "rollout/rollout_length",
        "rollout/terminated_fraction",
        "rollout/nonfinite_dropped",
    }
    assert expected <= recorder.keys
    assert model._last_model_train_step == 301  # first round right after learning_starts, then every 100
    assert list(tmp_path.rglob("events.out.tfevents*"))
    assert bool(model.dynamics.trained)


def test_policy_actions_sampled_in_chunks_keep_row_order(monkeypatch):

    model = fast_mbpo()
    monkeypatch.setattr("sb3_tom.tuning.POLICY_CHUNK_ROWS", 16)
    obs = th.randn(50, 3)
    with th.no_grad():
        th.manual_seed(1)
        chunked = model._sample_actions(obs)
        th.manual_seed(1)
        expected = th.cat([model.actor(chunk, deterministic=False) for chunk in obs.split(16)])
    assert chunked.shape == (50, 1)
    assert th.equal(chunked, expected)


def test_terminating_env_rollouts_terminate():
    model = fast_mbpo("InvertedPendulum-v4", rollout_length=5)
    model.learn(300)
    terminated = model.model_buffer.all().terminated
    assert terminated.sum() > 0
    # a terminal transition's next state is not used as a start state again: fewer than 5 * starts
    assert len(model.model_buffer) < 5 * 200


def test_nonfinite_model_predictions_dropped_and_counted():
    model = fast_mbpo()
    model.set_logger(configure(None, [""]))
    model.learn(150)
    with th.no_grad():
        model.dynamics.output_layer.bias[model.dynamics.elite_indices[0], :, 1] = float("nan")
    before = len(model.model_buffer)
    model._rollout(model._real_data().observations)
    dropped = model.logger.name_to_value["rollout/nonfinite_dropped"]
    assert dropped > 0
    stored = model.model_buffer.all()
    assert th.isfinite(stored.next_observations).all()
    assert len(model.model_buffer) == min(before + 200 - dropped, model.model_buffer.capacity)


def test_unknown_env_learns_termination(capsys):
    gym.register("UnknownPendulum-v0", entry_point="gymnasium.envs.classic_control:PendulumEnv", max_episode_steps=50)
    model = fast_mbpo("UnknownPendulum-v0", verbose=1)
    assert "learned termination classifier" in capsys.readouterr().out
    model.learn(150)
    # Pendulum never terminates; time-limit truncations are not terminals, so rollouts never terminate
    assert model._learned_termination is not None and not model._learned_termination.has_seen_terminal
    assert model.model_buffer.all().terminated.sum() == 0


def test_learned_termination_notice_names_the_environment(capsys):
    from gymnasium.envs.classic_control import PendulumEnv
    from stable_baselines3.common.vec_env import DummyVecEnv

    fast_mbpo(DummyVecEnv([PendulumEnv]), verbose=1)  # no registered id
    assert "No termination function known for this environment" in capsys.readouterr().out
    if "UnknownPendulum2-v0" not in gym.registry:
        gym.register("UnknownPendulum2-v0", entry_point="gymnasium.envs.classic_control:PendulumEnv", max_episode_steps=50)
    fast_mbpo(make_vec_env("UnknownPendulum2-v0", n_envs=1), verbose=1)
    assert "No termination function known for env 'UnknownPendulum2-v0'" in capsys.readouterr().out


def test_custom_termination_fn_is_used():
    calls = []

    def always_done(obs, act, next_obs):
        calls.append(obs.shape[0])
        return th.ones(obs.shape[0], dtype=th.bool)

    model = fast_mbpo(termination_fn=always_done, rollout_length=3)
    model.learn(150)
    assert calls and model.model_buffer.all().terminated.all()
    assert len(model.model_buffer) == 200  # every rollout stops after one step


# ---------------------------------------------------------------- save / load / reproducibility
def test_save_load_roundtrip_and_continue(tmp_path):
    model = fast_mbpo(seed=3)
    model.learn(250)
    path = tmp_path / "agent.zip"
    model.save(path)
    model.save_replay_buffer(tmp_path / "buffer.pkl")
    env = make_vec_env("Pendulum-v1", n_envs=1)
    loaded = MBPO.load(path, env=env)
    loaded.load_replay_buffer(tmp_path / "buffer.pkl")

    obs = np.random.default_rng(0).standard_normal((16, 3)).astype(np.float32)
    np.testing.assert_array_equal(model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])
    o, a = th.as_tensor(obs), th.rand(16, 1)
    for x, y in zip(model.dynamics.predict_all(o, a), loaded.dynamics.predict_all(o, a), strict=True):
        assert th.equal(x, y)
    assert th.equal(model.dynamics.elite_indices, loaded.dynamics.elite_indices)
    assert th.equal(model.dynamics.input_mean, loaded.dynamics.input_mean)
    opt_a, opt_b = model.dynamics_optimizer.state_dict(), loaded.dynamics_optimizer.state_dict()
    assert opt_a["state"].keys() == opt_b["state"].keys()
    assert th.equal(opt_a["state"][0]["exp_avg"], opt_b["state"][0]["exp_avg"])
    assert loaded._last_model_train_step == model._last_model_train_step == 201
    assert loaded.num_timesteps == 250

    loaded.learn(200, reset_num_timesteps=False)
    assert loaded.num_timesteps == 450
    # the model buffer is not saved: a full model round at the first update after load (251), then every 100 steps
    assert loaded._last_model_train_step == 351
    assert loaded.replay_buffer.pos == 450


def test_second_learn_with_reset_runs_model_rounds_on_fresh_rollouts():
    """SB3's default ``reset_num_timesteps=True``: a second ``learn`` starts over, with model rounds and no stale rollouts."""
    model = fast_mbpo(seed=0)
    model.learn(350)
    with th.no_grad():
        model.model_buffer.storage[: len(model.model_buffer), 2 * 3 + 1] = 1e6  # mark the old rollouts' rewards
    rounds = []
    original = model.train_model_and_rollout
    model.train_model_and_rollout = lambda: (rounds.append(model.num_timesteps), original())[1]  # type: ignore[method-assign]
    model.learn(350)
    assert rounds == [101, 201, 301]
    assert float(model.model_buffer.all().rewards.max()) < 1e6


def test_load_runs_a_full_model_round_and_keeps_the_learned_termination(tmp_path):
    """
    After ``load`` the model buffer (not saved) is refilled by a full model round, and the learned termination
    classifier of an env without a known termination function is saved and restored.
    """
    gym.register("UnknownInvertedPendulum-v0", entry_point="gymnasium.envs.mujoco.inverted_pendulum_v4:InvertedPendulumEnv")
    model = fast_mbpo("UnknownInvertedPendulum-v0", seed=0, rollout_length=3)
    model.learn(300)
    classifier = model._learned_termination
    assert classifier is not None and classifier.has_seen_terminal
    model.save(tmp_path / "agent.zip")
    model.save_replay_buffer(tmp_path / "buffer.pkl")
    loaded = MBPO.load(tmp_path / "agent.zip", env=make_vec_env("UnknownInvertedPendulum-v0", n_envs=1))
    loaded.load_replay_buffer(tmp_path / "buffer.pkl")
    restored = loaded._learned_termination
    assert restored is not None and restored.has_seen_terminal
    for (name, a), b in zip(classifier.state_dict().items(), restored.state_dict().values(), strict=True):
        assert th.equal(a, b), name
    data = model._real_data()
    assert th.equal(
        classifier(data.observations, data.actions, data.next_observations),
        restored(data.observations, data.actions, data.next_observations),
    )
    rounds = []
    original = loaded.train_model_and_rollout
    loaded.train_model_and_rollout = lambda: (rounds.append(loaded.num_timesteps), original())[1]  # type: ignore[method-assign]
    loaded.learn(20, reset_num_timesteps=False)
    assert rounds == [301]
    assert loaded.model_buffer.all().terminated.sum() > 0


def test_learn_that_resets_the_env_ends_the_stored_episode(tmp_path):
    """
    ``learn`` after ``load`` (or with SB3's default ``reset_num_timesteps=True``) resets the env in the middle of an
    episode: the newest stored transition becomes a time-limit truncation, so that the next one starts an episode
    (TOM's start states) while SAC and the model still bootstrap through it. A ``learn`` that continues does not.
    """
    model = fast_mbpo("HalfCheetah-v4", seed=0)  # 1000-step episodes: every cut below is mid-episode
    model.learn(150)
    model.learn(20, reset_num_timesteps=False)
    assert model.replay_buffer.dones[:170].sum() == 0
    model.save(tmp_path / "agent.zip")
    model.save_replay_buffer(tmp_path / "buffer.pkl")
    loaded = MBPO.load(tmp_path / "agent.zip", env=make_vec_env("HalfCheetah-v4", n_envs=1))
    loaded.load_replay_buffer(tmp_path / "buffer.pkl")
    loaded.learn(30, reset_num_timesteps=False)
    loaded.learn(30)
    buffer = loaded.replay_buffer
    assert buffer.pos == 230
    cuts = [169, 199]
    assert np.flatnonzero(buffer.dones[:230, 0]).tolist() == cuts
    assert np.flatnonzero(buffer.timeouts[:230, 0]).tolist() == cuts
    data = real_transitions(buffer, "cpu")
    assert float(data.terminated.sum()) == 0
    assert episode_start_mask(data).nonzero().flatten().tolist() == [0, 170, 200]


def test_load_without_replay_buffer_still_learns(tmp_path):
    model = fast_mbpo(seed=0)
    model.learn(150)
    model.save(tmp_path / "agent.zip")
    loaded = MBPO.load(tmp_path / "agent.zip", env=make_vec_env("Pendulum-v1", n_envs=1))
    with pytest.warns(UserWarning, match="load_replay_buffer"):
        loaded.learn(120, reset_num_timesteps=False)
    assert loaded.num_timesteps == 270


def test_same_seed_same_result():
    def run():
        model = fast_mbpo(seed=7)
        model.learn(250)
        return th.cat([p.detach().flatten() for p in [*model.policy.parameters(), *model.dynamics.parameters()]])

    assert th.equal(run(), run())


# ---------------------------------------------------------------- bad input
class NanEnv(gym.Env):
    observation_space = spaces.Box(-1, 1, (2,), np.float32)
    action_space = spaces.Box(-1, 1, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self.t += 1
        obs = np.full(2, np.nan if self.t == 5 else 0.0, np.float32)
        return obs, 0.0, False, False, {}


class ImageEnv(NanEnv):
    observation_space = spaces.Box(0, 255, (32, 32, 3), np.uint8)


class DictEnv(NanEnv):
    observation_space = spaces.Dict({"a": spaces.Box(-1, 1, (2,), np.float32)})


@pytest.mark.parametrize(
    "env, match",
    [
        ("CartPole-v1", "continuous"),
        (ImageEnv(), "Image observations"),
        (DictEnv(), "FlattenObservation"),
    ],
)
def test_unsupported_spaces(env, match):
    with pytest.raises(ValueError, match=match):
        MBPO("MlpPolicy", env)


def test_vec_normalize_under_another_wrapper_rejected():
    env = VecMonitor(VecNormalize(make_vec_env("Pendulum-v1", n_envs=1)))
    with pytest.raises(ValueError, match="VecNormalize"):
        MBPO("MlpPolicy", env)


def test_multiple_envs_rejected():
    with pytest.raises(ValueError, match="n_envs=1"):
        MBPO("MlpPolicy", make_vec_env("Pendulum-v1", n_envs=2))


def test_unsupported_policy_rejected():
    with pytest.raises(ValueError, match="MlpPolicy"):
        MBPO("CnnPolicy", "Pendulum-v1")


def test_nan_from_env_raises():
    model = fast_mbpo(NanEnv())
    with pytest.raises(ValueError, match="non-finite observation"):
        model.learn(20)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"real_ratio": 1.5}, "real_ratio"),
        ({"num_elites": 9}, "num_elites"),
        ({"rollout_length": 0}, "rollout_length"),
        ({"rollout_length": [10, 5, 1, 4]}, "epoch_end > epoch_start"),
        ({"rollout_length": [1, 2, 3]}, "rollout_length"),
        ({"model_train_freq": 0}, "model_train_freq"),
        ({"rollout_batch_size": 0}, "rollout_batch_size"),
        ({"dynamics_hidden_sizes": []}, "dynamics_hidden_sizes"),
        ({"model_holdout_ratio": 1.0}, "model_holdout_ratio"),
        ({"gradient_steps": 0}, "gradient_steps"),
        ({"learning_starts": 0}, "learning_starts"),
        ({"termination_fn": "hopper"}, "termination_fn"),
    ],
)
def test_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MBPO("MlpPolicy", "Pendulum-v1", **kwargs)


@pytest.mark.parametrize("algo", ["mbpo", "mbpo_tom"])
def test_non_flat_box_observations(algo):
    """
    A (2, 2)-shaped Box observation with real terminals (InvertedPendulum-v4 reshaped): the model and the termination
    function work on the flattened vector, the replay buffer and predict keep SB3's shapes.
    """
    from gymnasium.wrappers import ReshapeObservation

    from sb3_tom import MBPO_TOM

    env = ReshapeObservation(gym.make("InvertedPendulum-v4"), (2, 2))
    extra = dict(policy_buffer_size=50, discriminator_steps=10, dual_steps=10) if algo == "mbpo_tom" else {}
    model = (MBPO_TOM if algo == "mbpo_tom" else MBPO)("MlpPolicy", env, seed=0, rollout_length=3, **FAST, **extra)
    model.learn(350)
    assert model.replay_buffer.observations.shape[1:] == (1, 2, 2)
    assert model.dynamics.obs_dim == 4
    stored = model.model_buffer.all()
    assert stored.observations.shape[1] == 4 and stored.terminated.sum() > 0  # the pole falls in the model too
    action, _ = model.predict(env.observation_space.sample(), deterministic=True)
    assert action.shape == (1,)
    if algo == "mbpo_tom":
        assert model._weight_reference is not None


@pytest.mark.parametrize("algo", ["mbpo", "mbpo_tom"])
def test_model_error_on_the_policys_new_transitions_is_logged(algo):
    """
    Every model round after the first logs the error of the model as it stood before the round (elites' mean) on the
    real transitions collected since the previous round: transitions of the current policy that the model has not been
    trained on, on HalfCheetah-v4's 17-D observations and 6-D actions. Checked against a copy of the model.
    """
    import copy

    from sb3_tom import MBPO_TOM
    from sb3_tom.dynamics.training import EnsembleTrainer

    cls = MBPO if algo == "mbpo" else MBPO_TOM
    extra = {} if algo == "mbpo" else dict(policy_buffer_size=50, discriminator_steps=5, dual_steps=5)
    model = cls(
        "MlpPolicy", "HalfCheetah-v4", learning_starts=200, model_train_freq=100, rollout_batch_size=100,
        model_max_epochs=3, seed=0, **TINY_MBPO, **extra,
    )  # fmt: skip
    model.set_logger(configure(None, []))
    model.learn(370)  # rounds after steps 200 and 300: about 70 transitions since
    last = model._last_model_train_step  # the buffer's length at the last round
    assert 300 <= last < 370
    before = copy.deepcopy(model.dynamics)
    data = real_transitions(model.replay_buffer, model.device, np.arange(last, 370))
    prediction = before.predict_all(data.observations, data.actions)
    targets = EnsembleTrainer.make_targets(data.observations, data.rewards, data.next_observations)
    elites = before.elite_indices
    expected_mse = float(((prediction.mean - targets) ** 2).mean(-1).mean(-1)[elites].mean())
    nll = ((prediction.mean - targets) ** 2 * th.exp(-prediction.logvar) + prediction.logvar).mean(-1).mean(-1)
    expected_nll = float(nll[elites].mean())

    model.train_model_and_rollout()
    logged = model.logger.name_to_value
    assert logged["model/new_data_mse"] == pytest.approx(expected_mse, rel=1e-5)
    assert logged["model/new_data_nll"] == pytest.approx(expected_nll, rel=1e-5, abs=1e-6)
    assert logged["model/new_data_transitions"] == 370 - last
    # the round trained the model on those transitions: its error on them went down
    after = model.dynamics.predict_all(data.observations, data.actions).mean
    assert float(((after - targets) ** 2).mean(-1).mean(-1)[model.dynamics.elite_indices].mean()) < expected_mse
