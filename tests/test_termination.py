"""Termination functions against the real environments' ``terminated`` flags, and the learned classifier."""

import warnings
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
import pytest
import torch as th

from sb3_tom.dynamics.termination import (
    LearnedTermination,
    balanced_accuracy,
    env_base_name,
    get_termination_fn,
    inverted_double_pendulum_termination,
)


class Rollouts(NamedTuple):
    obs: np.ndarray
    actions: np.ndarray
    next_obs: np.ndarray
    terminated: np.ndarray


def make_env(env_id: str) -> gym.Env:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return gym.make(env_id)
        except ImportError as error:  # e.g. Pusher-v4 needs mujoco < 3
            pytest.skip(f"{env_id} cannot be created here: {error}")


def collect(env_id: str, n_steps: int, seed: int) -> Rollouts:
    """Random-action transitions, resetting on termination or truncation; ``next_obs`` is the pre-reset observation."""
    env = make_env(env_id)
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    data: dict[str, list] = {"obs": [], "actions": [], "next_obs": [], "terminated": []}
    for _ in range(n_steps):
        action = env.action_space.sample()
        next_obs, _, terminated, truncated, _ = env.step(action)
        for key, value in zip(data, (obs, action, next_obs, terminated), strict=True):
            data[key].append(value)
        obs = env.reset()[0] if terminated or truncated else next_obs
    env.close()
    return Rollouts(*(np.array(values) for values in data.values()))


def predict(env_id: str, rollouts: Rollouts, dtype: th.dtype = th.float64) -> np.ndarray:
    termination_fn = get_termination_fn(env_id)
    assert termination_fn is not None
    obs, actions, next_obs = (th.as_tensor(x, dtype=dtype) for x in rollouts[:3])
    predicted = termination_fn(obs, actions, next_obs)
    assert predicted.dtype == th.bool
    assert predicted.shape == (len(rollouts.terminated),)
    return predicted.numpy()


# Envs that terminate under random actions (each step count is enough for several terminals with the seed below;
# Ant only ends when it jumps over a height of 1.0, about once in 200 random steps).
TERMINATING = {
    "Hopper-v4": 2000,
    "Hopper-v5": 2000,
    "Walker2d-v4": 2000,
    "Walker2d-v5": 2000,
    "Ant-v4": 3000,
    "Ant-v5": 3000,
    "Humanoid-v4": 1500,
    "Humanoid-v5": 1500,
    "InvertedPendulum-v4": 2000,
    "InvertedPendulum-v5": 2000,
}
NEVER_TERMINATING = [
    "HalfCheetah-v4",
    "HalfCheetah-v5",
    "Swimmer-v4",
    "Swimmer-v5",
    "Reacher-v4",
    "Reacher-v5",
    "Pusher-v4",
    "Pusher-v5",
    "HumanoidStandup-v4",
    "HumanoidStandup-v5",
    "Pendulum-v1",
]
SEED = 0


@pytest.mark.parametrize("env_id", list(TERMINATING))
def test_matches_real_env(env_id: str) -> None:
    rollouts = collect(env_id, TERMINATING[env_id], seed=SEED)
    assert rollouts.terminated.sum() >= 3, "the rollouts must include terminal transitions"
    assert not rollouts.terminated.all()
    np.testing.assert_array_equal(predict(env_id, rollouts), rollouts.terminated)
    # Model predictions and replay buffers are float32
    np.testing.assert_array_equal(predict(env_id, rollouts, th.float32), rollouts.terminated)


@pytest.mark.parametrize("env_id", NEVER_TERMINATING)
def test_never_terminating(env_id: str) -> None:
    rollouts = collect(env_id, 300, seed=SEED)
    assert not rollouts.terminated.any()
    np.testing.assert_array_equal(predict(env_id, rollouts), rollouts.terminated)


def idp_tip_height(next_obs: np.ndarray) -> np.ndarray:
    sin1, sin2, cos1, cos2 = next_obs[:, 1:5].T
    return 0.6 * cos1 + 0.6 * (cos1 * cos2 - sin1 * sin2)


@pytest.mark.parametrize("env_id", ["InvertedDoublePendulum-v4", "InvertedDoublePendulum-v5"])
def test_inverted_double_pendulum(env_id: str) -> None:
    rollouts = collect(env_id, 3000, seed=SEED)
    assert rollouts.terminated.sum() >= 3
    predicted = predict(env_id, rollouts)
    # The env reads the tip height from data.site_xpos, which after mj_step (RK4) holds the kinematics of the last
    # integration stage rather than of the final state (at most ~0.013 apart on random rollouts, about one disagreement
    # in 20000 transitions). Decisions may only differ that close to the threshold; none do with this seed.
    near_threshold = np.abs(idp_tip_height(rollouts.next_obs) - 1.0) < 0.02
    np.testing.assert_array_equal(predicted[~near_threshold], rollouts.terminated[~near_threshold])
    np.testing.assert_array_equal(predicted, rollouts.terminated)
    np.testing.assert_array_equal(predict(env_id, rollouts, th.float32), rollouts.terminated)


def test_idp_pole_lengths() -> None:
    """The tip height derived from the observation is the geometric height of the "tip" site for that state."""
    env = make_env("InvertedDoublePendulum-v5")
    env.reset(seed=SEED)
    unwrapped: Any = env.unwrapped  # MujocoEnv
    rng = np.random.default_rng(SEED)
    for _ in range(20):
        qpos = rng.uniform(-np.pi, np.pi, size=unwrapped.model.nq)
        unwrapped.set_state(qpos, np.zeros(unwrapped.model.nv))  # runs mj_forward
        obs = unwrapped._get_obs()[None]
        assert idp_tip_height(obs)[0] == pytest.approx(unwrapped.data.site_xpos[0][2], abs=1e-9)
        expected = unwrapped.data.site_xpos[0][2] <= 1.0
        assert bool(inverted_double_pendulum_termination(th.zeros(1), th.zeros(1), th.as_tensor(obs))[0]) == expected
    env.close()


def test_non_finite_and_boundaries() -> None:
    def terminal(env_id: str, next_obs: list) -> list:
        termination_fn = get_termination_fn(env_id)
        assert termination_fn is not None
        x = th.tensor(next_obs, dtype=th.float64)
        return termination_fn(x, x, x).tolist()

    nan, inf = float("nan"), float("inf")
    # Hopper: height, angle, then the other joints and velocities
    assert terminal("Hopper-v5", [[1.2, 0.0, 0.0], [1.2, 0.0, nan], [1.2, 0.0, inf], [nan, 0.0, 0.0], [inf, 0.0, 0.0]]) == [
        False,
        True,
        True,
        True,
        True,
    ]
    assert terminal("Hopper-v4", [[0.7, 0.0, 0.0], [1.2, 0.2, 0.0], [1.2, -0.19, 99.0], [1.2, 0.0, -100.0]]) == [
        True,
        True,
        False,
        True,
    ]
    assert terminal("Walker2d-v4", [[0.8, 0.0], [2.0, 0.0], [1.2, 1.0], [1.2, -0.99], [nan, 0.0], [1.2, 0.0]]) == [
        True,
        True,
        True,
        False,
        True,
        False,
    ]
    assert terminal("Ant-v5", [[0.2, 0.0], [1.0, 0.0], [1.01, 0.0], [0.19, 0.0], [0.5, nan], [0.5, -inf]]) == [
        False,
        False,
        True,
        True,
        True,
        True,
    ]
    assert terminal("Humanoid-v4", [[1.0, 0.0], [2.0, 0.0], [1.5, nan], [nan, 0.0], [1.99, 0.0]]) == [
        True,
        True,
        False,
        True,
        False,
    ]
    assert terminal("InvertedPendulum-v5", [[0.0, 0.2, 0.0, 0.0], [0.0, -0.21, 0.0, 0.0], [0.0, 0.0, nan, 0.0]]) == [
        False,
        True,
        True,
    ]
    # Upright, then just below and just above the threshold (q1 = 0, cos q2 = 2/3 gives a height of 1); a NaN height
    # is not terminal in the env either
    c2 = 2.0 / 3.0
    s2 = np.sqrt(1.0 - c2**2)
    rows = [
        [0.0, 0.0, 0.0, 1.0, 1.0],
        [0.0, 0.0, s2, 1.0, c2 - 1e-9],
        [0.0, 0.0, s2, 1.0, c2 + 1e-9],
        [0.0, nan, 0.0, 1.0, 1.0],
    ]
    assert terminal("InvertedDoublePendulum-v4", rows) == [False, True, False, False]


def test_env_id_parsing() -> None:
    assert env_base_name("Hopper-v4") == "Hopper"
    assert env_base_name("gymnasium/Hopper-v5") == "Hopper"
    assert env_base_name("my_package.envs:InvertedDoublePendulum-v4") == "InvertedDoublePendulum"
    assert env_base_name("Hopper") == "Hopper"
    for env_id in ["Hopper-v3", "some_namespace/Walker2d-v5", "module:Ant-v4", "Humanoid"]:
        assert get_termination_fn(env_id) is not None
    assert get_termination_fn("Hopper-v5") is get_termination_fn("Hopper-v4")
    assert get_termination_fn("Humanoid-v5") is not get_termination_fn("HumanoidStandup-v5")


@pytest.mark.parametrize("env_id", ["CartPole-v1", "MountainCarContinuous-v0", "ALE/Pong-v5", "HopperBulletEnv-v0", ""])
def test_unknown_env(env_id: str) -> None:
    assert get_termination_fn(env_id) is None


def test_batch_shapes_and_device() -> None:
    termination_fn = get_termination_fn("Hopper-v4")
    assert termination_fn is not None
    next_obs = th.zeros(5, 11)
    next_obs[:, 0] = 1.25
    next_obs[2, 1] = 0.5
    assert termination_fn(th.zeros(5, 11), th.zeros(5, 3), next_obs).tolist() == [False, False, True, False, False]
    never = get_termination_fn("HalfCheetah-v5")
    assert never is not None
    result = never(th.zeros(7, 17), th.zeros(7, 6), th.zeros(7, 17))
    assert result.dtype == th.bool and result.shape == (7,) and not result.any()


def test_learned_termination_before_terminals() -> None:
    rollouts = collect("HalfCheetah-v5", 200, seed=SEED)
    model = LearnedTermination(obs_dim=17, action_dim=6)
    assert not model.has_seen_terminal
    obs, actions, next_obs, terminated = (th.as_tensor(x, dtype=th.float32) for x in rollouts)
    assert not model(obs, actions, next_obs).any()
    metrics = model.fit(obs, actions, next_obs, terminated, n_steps=10)
    assert not model.has_seen_terminal
    assert metrics["terminal_fraction"] == 0.0
    predicted = model(obs, actions, next_obs)
    assert predicted.dtype == th.bool and predicted.shape == (200,) and not predicted.any()
    # Non-finite inputs are not terminal either before a terminal has been seen
    assert not model(obs[:2], actions[:2], th.full((2, 17), float("nan"))).any()


@pytest.fixture
def single_thread():
    """Small-batch training is much slower with several torch threads on a busy machine."""
    n_threads = th.get_num_threads()
    th.set_num_threads(1)
    yield
    th.set_num_threads(n_threads)


@pytest.mark.usefixtures("single_thread")
def test_learned_termination_hopper() -> None:
    th.manual_seed(SEED)
    train = collect("Hopper-v4", 6000, seed=1)
    test = collect("Hopper-v4", 3000, seed=2)
    assert train.terminated.sum() >= 100 and test.terminated.sum() >= 50

    model = LearnedTermination(obs_dim=11, action_dim=3, hidden_size=64)
    metrics = model.fit(train.obs, train.actions, train.next_obs, train.terminated, n_steps=1500)
    assert model.has_seen_terminal
    assert metrics["terminal_fraction"] == pytest.approx(train.terminated.mean())
    assert metrics["balanced_accuracy"] >= 0.95

    with th.inference_mode():  # as in the model rollouts
        obs, actions, next_obs = (th.as_tensor(x, dtype=th.float32) for x in test[:3])
        predicted = model(obs, actions, next_obs)
    assert predicted.dtype == th.bool and predicted.shape == (len(test.terminated),)
    held_out = balanced_accuracy(predicted, th.as_tensor(test.terminated))
    assert held_out >= 0.95, f"held-out balanced accuracy {held_out:.3f}"
    # Non-finite predictions are terminal once the classifier is active
    assert model(obs[:1], actions[:1], th.full((1, 11), float("nan"))).tolist() == [True]

    # Fitting again, under inference mode and with torch tensors, keeps working
    with th.inference_mode():
        obs, actions, next_obs, terminated = (th.as_tensor(x, dtype=th.float32) for x in train)
        metrics = model.fit(obs, actions, next_obs, terminated, n_steps=10)
    assert 0.0 <= metrics["loss"] < 0.5 and metrics["balanced_accuracy"] >= 0.9


@pytest.mark.usefixtures("single_thread")
def test_learned_termination_ignores_noise_in_constant_dimensions() -> None:
    """
    InvertedDoublePendulum's observation holds constraint forces that are always 0 in the real data. Model noise of
    1e-3 in those dimensions must not change the prediction (a 1e-6 std floor would scale it to 1000 standard deviations).
    """
    th.manual_seed(SEED)
    train = collect("InvertedDoublePendulum-v4", 3000, seed=1)
    next_obs = th.as_tensor(train.next_obs, dtype=th.float32)
    constant = (next_obs == next_obs[0]).all(dim=0)
    assert constant.sum() >= 2
    model = LearnedTermination(obs_dim=11, action_dim=1)
    model.fit(train.obs, train.actions, train.next_obs, train.terminated, n_steps=300)
    assert th.equal(model.obs_std[constant], th.ones(int(constant.sum())))
    noisy = next_obs.clone()
    noisy[:, constant] += 1e-3 * th.randn(noisy.shape[0], int(constant.sum()))
    with th.no_grad():
        assert float((model.logits(noisy) - model.logits(next_obs)).abs().max()) < 0.05
    assert th.equal(model(next_obs, next_obs, noisy), model(next_obs, next_obs, next_obs))
