"""
Throughput of sb3_tom's hot paths, each figure measured in the same run as its reference.

    python benchmarks/throughput.py [--quick] [--json PATH] [--threads N] [--skip-e2e]

Sections (HalfCheetah-v4 sizes: obs 17, action 6):

a. policy update: ``fast_sac_train`` vs SB3's ``SAC.train`` per gradient step (batch 256, identical networks,
   same replay buffer), measured in interleaved rounds; also on MBPO's mixed real/model batches. And the
   update's FLOP floor: its matmul FLOPs at the best throughput measured in this run for its dominant matmul
   (batch x hidden x hidden: torch.mm/bmm, and oneDNN through ``sb3_tom.kernels.linear``); SB3's time over that
   floor is the most any exact (float32) update can gain here.
b. dynamics ensemble (7 members, 4x200): one ``EnsembleTrainer`` epoch over 20,000 transitions and one
   ``GaussianEnsemble.sample`` of 100,000 states, against their FLOP floor (FLOPs / batched-matmul throughput
   measured in this run at the same sizes).
c. end to end: env steps/s of MBPO_TOM (MBPO while MBPO_TOM is not available) with its defaults vs SB3 SAC with
   ``gradient_steps=20`` over the same window of env steps, each in its own process, the two taking turns in
   chunks of env steps so that load changes hit both alike; where MBPO_TOM's time goes, and how much time its model
   rounds could take for a 1.5x speed-up with the rest as measured; peak RSS of each.
d. memory: bytes of a 1M-transition real buffer and the HalfCheetah-default model buffer, and RSS once filled.

Every timing is wall-clock. The machine's load average is printed: on a shared machine, compare ratios.
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3 import SAC
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import configure

try:
    import sb3_tom  # noqa: F401
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sb3_tom.buffers import MixedBatchSampler, ModelReplayBuffer, Transitions
from sb3_tom.dynamics.ensemble import GaussianEnsemble
from sb3_tom.dynamics.training import EnsembleTrainer
from sb3_tom.kernels import linear
from sb3_tom.mbpo.fast_sac import fast_sac_train
from sb3_tom.tuning import INFERENCE_CHUNK_ROWS

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import cpu_info

ENV_ID = "HalfCheetah-v4"
OBS_DIM, ACT_DIM = 17, 6
BATCH = 256
E2E_TARGET = 1.5  # end-to-end speed-up asked for


def make_env() -> gym.Env:
    return gym.make(ENV_ID)


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(fns: dict[str, Callable[[], Any]], rounds: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds per call of each function, alternating between them so that load changes hit all alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name].append(timed(fn))
    return times


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


# ---------------------------------------------------------------------------------------------- (a) policy update
def filled_replay_buffer(n: int, seed: int = 0) -> ReplayBuffer:
    env = make_env()
    buffer = ReplayBuffer(n, env.observation_space, env.action_space, device="cpu")
    rng = np.random.default_rng(seed)
    buffer.observations[:] = rng.standard_normal(buffer.observations.shape)
    buffer.next_observations[:] = rng.standard_normal(buffer.next_observations.shape)
    buffer.actions[:] = rng.uniform(-1, 1, buffer.actions.shape)
    buffer.rewards[:] = rng.standard_normal(buffer.rewards.shape)
    buffer.dones[:] = rng.random(buffer.dones.shape) < 0.01
    buffer.full = True
    return buffer


def twin_sac(seed: int = 0) -> tuple[SAC, SAC]:
    env = make_env()
    reference = SAC("MlpPolicy", env, batch_size=BATCH, buffer_size=1, seed=seed, device="cpu")
    fast = SAC("MlpPolicy", env, batch_size=BATCH, buffer_size=1, seed=seed, device="cpu")
    fast.policy.load_state_dict(reference.policy.state_dict())
    for agent in (reference, fast):
        agent.set_logger(configure(None, [""]))
    return reference, fast


def bench_update(rounds: int, gradient_steps: int = 20) -> dict[str, float]:
    buffer = filled_replay_buffer(20_000)
    reference, fast = twin_sac()
    reference.replay_buffer = buffer

    def sb3_train() -> None:
        reference.train(gradient_steps, BATCH)

    def fast_train() -> None:
        fast_sac_train(fast, gradient_steps, BATCH, buffer)

    times = interleaved({"sb3": sb3_train, "fast": fast_train}, rounds)
    sb3_ms = statistics.median(times["sb3"]) / gradient_steps * 1e3
    fast_ms = statistics.median(times["fast"]) / gradient_steps * 1e3

    # MBPO's batches: 5% real transitions, 95% model rollouts
    model_buffer = ModelReplayBuffer(400_000, OBS_DIM, ACT_DIM)
    n = 400_000
    gen = th.Generator().manual_seed(0)
    model_buffer.add(
        Transitions(
            th.randn(n, OBS_DIM, generator=gen),
            th.rand(n, ACT_DIM, generator=gen) * 2 - 1,
            th.randn(n, generator=gen),
            th.randn(n, OBS_DIM, generator=gen),
            th.zeros(n),
        )
    )
    sampler = MixedBatchSampler(buffer, model_buffer, real_ratio=0.05)
    reference.replay_buffer = sampler  # type: ignore[assignment]

    def fast_mixed() -> None:
        fast_sac_train(fast, gradient_steps, BATCH, sampler)

    mixed = interleaved({"sb3": sb3_train, "fast": fast_mixed}, rounds)
    sb3_mixed_ms = statistics.median(mixed["sb3"]) / gradient_steps * 1e3
    fast_mixed_ms = statistics.median(mixed["fast"]) / gradient_steps * 1e3

    # FLOP floor of one update: every FLOP of its matmuls at the best throughput of its dominant matmul
    hidden = max(m.out_features for m in reference.actor.modules() if isinstance(m, th.nn.Linear))
    min_seconds = 0.5 if rounds < 10 else 2.0
    peak = max(
        *(bmm_gflops(1, BATCH, hidden, hidden, layout, min_seconds) for layout in ("NN", "TN", "NT")),
        linear_gflops(BATCH, hidden, hidden, min_seconds),  # the oneDNN kernel of sb3_tom.kernels, where available
    )
    flops = sac_update_flops(reference, BATCH)
    floor_ms = flops / (peak * 1e9) * 1e3
    return {
        "update_gflop": flops / 1e9,
        "update_matmul_peak_gflops": peak,
        "update_floor_ms": floor_ms,
        "update_floor_ratio": fast_ms / floor_ms,
        "update_speedup_bound": sb3_ms / floor_ms,
        "sb3_sac_train_ms_per_step": sb3_ms,
        "fast_update_ms_per_step": fast_ms,
        "update_speedup_vs_sb3_sac": sb3_ms / fast_ms,
        "mixed_sb3_sac_train_ms_per_step": sb3_mixed_ms,
        "mixed_fast_update_ms_per_step": fast_mixed_ms,
        "mixed_update_speedup_vs_sb3_sac": sb3_mixed_ms / fast_mixed_ms,
    }


def linear_macs(networks: list[th.nn.Module]) -> tuple[int, int]:
    """Multiply-accumulates per row of the ``nn.Linear`` layers of ``networks``: (all layers, their first layers)."""
    total = first = 0
    for network in networks:
        layers = [m for m in network.modules() if isinstance(m, th.nn.Linear)]
        total += sum(m.in_features * m.out_features for m in layers)
        first += layers[0].in_features * layers[0].out_features
    return total, first


def sac_update_flops(model: SAC, batch_size: int) -> int:
    """
    Matmul FLOPs of one ``fast_sac_train`` step (forward ``F``, weight gradients ``W``, input gradients ``I``):

    actor ``F`` on ``s`` and on ``s'``; target critics ``F`` on ``(s', a')``; critics ``F + W + I`` (no input
    gradient of the first layer) on ``(s, a)``; critics ``F + I`` on ``(s, a_pi)``, down to ``a_pi``; actor
    ``W + I`` (no input gradient of the first layer). SB3's ``SAC.train`` also computes ``W`` of the critics for
    the actor loss (``2 * critic`` MACs more per row), which it then discards.
    """
    actor_all, _ = linear_macs([model.actor])
    _, actor_first = linear_macs([model.actor.latent_pi])
    critic_all, critic_first = linear_macs(list(model.critic.q_networks))  # both Q-networks
    macs = (
        2 * actor_all  # actor forward on s and s'
        + critic_all  # target critics forward on (s', a')
        + critic_all
        + critic_all
        + (critic_all - critic_first)  # critic loss: forward, W, I
        + critic_all
        + critic_all  # actor loss through the critics: forward, I down to the actions
        + actor_all
        + (actor_all - actor_first)  # actor backward: W, I
    )
    return 2 * batch_size * macs


# ---------------------------------------------------------------------------------------------- (b) ensemble
def bmm_gflops(batch: int, m: int, k: int, n: int, layout: str, min_seconds: float) -> float:
    """Measured GFLOP/s of ``th.bmm`` for ``(batch, m, k) @ (batch, k, n)``; layout NN, TN (A^T B) or NT (A B^T)."""
    gen = th.Generator().manual_seed(0)
    if layout == "TN":
        a = th.randn(batch, k, m, generator=gen).transpose(1, 2)
    else:
        a = th.randn(batch, m, k, generator=gen)
    b = th.randn(batch, n, k, generator=gen).transpose(1, 2) if layout == "NT" else th.randn(batch, k, n, generator=gen)
    out = th.empty(batch, m, n)
    th.bmm(a, b, out=out)
    reps, elapsed = 0, 0.0
    best = float("inf")
    while elapsed < min_seconds or reps < 3:
        t = timed(lambda: th.bmm(a, b, out=out))
        best, elapsed, reps = min(best, t), elapsed + t, reps + 1
    return 2 * batch * m * k * n / best / 1e9


def linear_gflops(rows: int, in_features: int, out_features: int, min_seconds: float) -> float:
    """Measured GFLOP/s of :func:`sb3_tom.kernels.linear` (oneDNN on CPU where available) at these sizes."""
    gen = th.Generator().manual_seed(0)
    x, weight = th.randn(rows, in_features, generator=gen), th.randn(out_features, in_features, generator=gen)
    linear(x, weight)
    reps, elapsed, best = 0, 0.0, float("inf")
    while elapsed < min_seconds or reps < 3:
        t = timed(lambda: linear(x, weight))
        best, elapsed, reps = min(best, t), elapsed + t, reps + 1
    return 2 * rows * in_features * out_features / best / 1e9


def ensemble_flops_per_row(ensemble: GaussianEnsemble) -> tuple[int, int]:
    """Multiply-accumulates per row and member: (all layers, all layers but the first)."""
    sizes = [(layer.weight.shape[1], layer.weight.shape[2]) for layer in [*ensemble.layers, ensemble.output_layer]]
    all_layers = sum(i * o for i, o in sizes)
    return all_layers, all_layers - sizes[0][0] * sizes[0][1]


def bench_ensemble(repeats: int, min_seconds: float) -> dict[str, float]:
    th.manual_seed(0)
    members, hidden, n_train, n_rollout = 7, 200, 20_000, 100_000
    ensemble = GaussianEnsemble(OBS_DIM, ACT_DIM, ensemble_size=members, num_elites=5, hidden_sizes=(hidden,) * 4)
    trainer = EnsembleTrainer(ensemble, batch_size=BATCH, holdout_ratio=0.0, max_epochs=1)
    obs, actions = th.randn(n_train, OBS_DIM), th.rand(n_train, ACT_DIM) * 2 - 1
    rewards, next_obs = th.randn(n_train), obs + 0.1 * th.randn(n_train, OBS_DIM)
    trainer.fit(obs, actions, rewards, next_obs)  # warm-up
    epoch_times = [timed(lambda: trainer.fit(obs, actions, rewards, next_obs)) for _ in range(repeats)]

    roll_obs, roll_actions = th.randn(n_rollout, OBS_DIM), th.rand(n_rollout, ACT_DIM) * 2 - 1
    ensemble.sample(roll_obs, roll_actions)  # warm-up
    rollout_times = [timed(lambda: ensemble.sample(roll_obs, roll_actions)) for _ in range(repeats)]

    # FLOPs: training = forward + weight gradients + input gradients (not of the first layer), every member
    # on its own minibatch of each row; rollout = forward of the elites, each on its share of the states
    macs, macs_no_first = ensemble_flops_per_row(ensemble)
    epoch_flops = 2 * members * n_train * (2 * macs + macs_no_first)
    rollout_flops = 2 * n_rollout * macs
    # Peak: the best bmm throughput at the op's dominant (hidden x hidden) layer, over its layouts and sizes
    train_peak = max(
        bmm_gflops(members, BATCH, hidden, hidden, "NN", min_seconds),  # forward
        bmm_gflops(members, hidden, BATCH, hidden, "TN", min_seconds),  # weight gradient
        bmm_gflops(members, BATCH, hidden, hidden, "NT", min_seconds),  # input gradient
    )
    per_elite = -(-n_rollout // ensemble.num_elites)
    rollout_peak = max(  # the whole batch per elite, and a cache-sized chunk of it
        bmm_gflops(ensemble.num_elites, per_elite, hidden, hidden, "NN", min_seconds),
        bmm_gflops(ensemble.num_elites, INFERENCE_CHUNK_ROWS, hidden, hidden, "NN", min_seconds),
    )
    epoch_s, rollout_s = statistics.median(epoch_times), statistics.median(rollout_times)
    epoch_floor, rollout_floor = epoch_flops / (train_peak * 1e9), rollout_flops / (rollout_peak * 1e9)
    return {
        "ensemble_epoch_s": epoch_s,
        "ensemble_epoch_samples_per_s": n_train / epoch_s,
        "ensemble_epoch_gflop": epoch_flops / 1e9,
        "ensemble_train_peak_gflops": train_peak,
        "ensemble_epoch_floor_s": epoch_floor,
        "ensemble_epoch_floor_ratio": epoch_s / epoch_floor,
        "rollout_s": rollout_s,
        "rollout_samples_per_s": n_rollout / rollout_s,
        "rollout_gflop": rollout_flops / 1e9,
        "rollout_peak_gflops": rollout_peak,
        "rollout_floor_s": rollout_floor,
        "rollout_floor_ratio": rollout_s / rollout_floor,
    }


# ---------------------------------------------------------------------------------------------- (c) end to end
def shipped_hyperparameters() -> dict[str, Any]:
    """MBPO_TOM's shipped HalfCheetah-v4 hyperparameters (those of RL Zoo and ``make train``)."""
    from sb3_tom import zoo

    return zoo.hyperparameters("mbpo_tom", ENV_ID)


def make_agent(algo: str, learning_starts: int) -> tuple[SAC, str]:
    """MBPO_TOM with the shipped hyperparameters, or SB3's SAC with the same updates per env step."""
    from sb3_tom import MBPO_TOM

    params = {**shipped_hyperparameters(), "learning_starts": learning_starts}
    if algo == "sac":
        sac = SAC("MlpPolicy", ENV_ID, gradient_steps=params["gradient_steps"], learning_starts=learning_starts, seed=0)
        return sac, "sac"
    return MBPO_TOM("MlpPolicy", ENV_ID, seed=0, device="cpu", **params), "mbpo_tom"


class StepCounter(BaseCallback):
    """Counts the env steps of a ``learn`` call (to check the window covers exactly the steps asked for)."""

    def __init__(self) -> None:
        super().__init__()
        self.steps = 0

    def _on_step(self) -> bool:
        self.steps += 1
        return True


def e2e_worker(algo: str, start: int, learning_starts: int) -> None:
    """
    One agent in its own process, driven over stdin: ``run N`` learns N more env steps and answers the seconds
    it took (and the time spent in model rounds and policy updates); ``quit`` answers the peak RSS.
    """
    model, used = make_agent(algo, learning_starts)
    spent = {"model_round_s": 0.0, "policy_updates_s": 0.0}
    for method, key in (("train_model_and_rollout", "model_round_s"), ("_policy_updates", "policy_updates_s")):
        if hasattr(model, method):
            setattr(model, method, _accumulate_time(getattr(model, method), spent, key))
    if start > 0:
        model.learn(start)  # exploration up to the window (no training before learning_starts)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        command = line.split()
        if command[0] == "run":
            counter = StepCounter()
            before = dict(spent)
            clock = time.perf_counter()
            model.learn(int(command[1]), callback=counter, reset_num_timesteps=False)
            seconds = time.perf_counter() - clock
            reply = {key: spent[key] - before[key] for key in spent}
            print(json.dumps({"seconds": seconds, "steps": counter.steps, **reply}), flush=True)
        else:
            print(json.dumps({"algo": used, "peak_rss_mb": peak_rss_mb(), "num_timesteps": model.num_timesteps}), flush=True)
            return


def _accumulate_time(fn: Callable[..., Any], spent: dict[str, float], key: str) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[key] += time.perf_counter() - start

    return wrapper


def peak_rss_mb() -> float:
    """Peak resident set size of this process (VmHWM: unlike ru_maxrss, not inherited from the parent at exec)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_e2e(
    start: int, end: int, learning_starts: int, chunk: int, threads: int, prefix: str = "e2e", progress: bool = False
) -> dict[str, Any]:
    """
    MBPO_TOM and SB3 SAC, each in its own process, learn the window ``start..end`` in alternating chunks of
    ``chunk`` env steps (one waits while the other runs), so that changes of the machine's load hit both alike.
    A window from 0 is a whole run. The keys start with ``prefix``; ``progress`` prints the totals after each chunk.
    """
    algos = ("mbpo_tom", "sac")
    procs: dict[str, subprocess.Popen[str]] = {}
    logs = {}
    for algo in algos:
        logs[algo] = tempfile.TemporaryFile("w+")
        cmd = [sys.executable, __file__, "--e2e-worker", algo, "--threads", str(threads)]
        cmd += ["--window", str(start), str(end), "--learning-starts", str(learning_starts)]
        procs[algo] = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=logs[algo], text=True)

    def ask(algo: str, command: str | None) -> dict[str, Any]:
        proc = procs[algo]
        assert proc.stdin is not None and proc.stdout is not None
        if command is not None:
            proc.stdin.write(command + "\n")
            proc.stdin.flush()
        for line in proc.stdout:
            if line.startswith("{"):
                return json.loads(line)
        logs[algo].seek(0)
        raise RuntimeError(f"end-to-end worker {algo} failed:\n{logs[algo].read()[-3000:]}")

    totals = {algo: {"seconds": 0.0, "steps": 0, "model_round_s": 0.0, "policy_updates_s": 0.0} for algo in algos}
    try:
        for algo in algos:
            ask(algo, None)  # ready
        for i, first in enumerate(range(start, end, chunk)):
            n = min(chunk, end - first)
            for algo in algos if i % 2 == 0 else algos[::-1]:
                for key, value in ask(algo, f"run {n}").items():
                    totals[algo][key] += value
            if progress:
                ours, sac = totals["mbpo_tom"], totals["sac"]
                print(
                    f"({prefix}) {first + n} steps: MBPO_TOM {ours['seconds']:.0f} s ({ours['model_round_s']:.0f} s in "
                    f"model rounds), SAC {sac['seconds']:.0f} s",
                    flush=True,
                )
        final = {algo: ask(algo, "quit") for algo in algos}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    ours, sac = totals["mbpo_tom"], totals["sac"]
    assert ours["steps"] == sac["steps"] == end - start, (ours["steps"], sac["steps"])
    figures = {
        "algo": final["mbpo_tom"]["algo"],
        "gradient_steps": shipped_hyperparameters()["gradient_steps"],
        "window": [start, end],
        "learning_starts": learning_starts,
        "chunk": chunk,
        "steps_per_s": ours["steps"] / ours["seconds"],
        "sac_steps_per_s": sac["steps"] / sac["seconds"],
        "speedup_vs_sb3_sac": sac["seconds"] / ours["seconds"],
        "peak_rss_mb": final["mbpo_tom"]["peak_rss_mb"],
        "sac_peak_rss_mb": final["sac"]["peak_rss_mb"],
        "window_s": ours["seconds"],
        "model_round_s": ours["model_round_s"],
        "model_round_share": ours["model_round_s"] / ours["seconds"],
        "policy_updates_s": ours["policy_updates_s"],
        "sac_window_s": sac["seconds"],
        # The most the model rounds could take for the 1.5x target, everything else in the window as measured
        "model_round_budget_s": sac["seconds"] / E2E_TARGET - (ours["seconds"] - ours["model_round_s"]),
    }
    results = {f"{prefix}_{key}": value for key, value in figures.items()}
    results["end_to_end_speedup_vs_sb3_sac" if prefix == "e2e" else f"end_to_end_{prefix}_speedup_vs_sb3_sac"] = figures[
        "speedup_vs_sb3_sac"
    ]
    return results


def bench_whole_run(steps: int, threads: int) -> dict[str, Any]:
    """
    What a user waits for: a whole run of ``steps`` env steps from scratch (shipped HalfCheetah-v4 hyperparameters, as
    ``make train``) of MBPO_TOM and of SB3 SAC at the same updates per step, interleaved in chunks of 250 steps.
    The speed-up is ``end_to_end_whole_run_speedup_vs_sb3_sac``; ``whole_run_model_round_share`` is the model rounds'.
    """
    return bench_e2e(0, steps, shipped_hyperparameters()["learning_starts"], 250, threads, prefix="whole_run", progress=True)


# ---------------------------------------------------------------------------------------------- (d) memory
def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def bench_memory() -> dict[str, float]:
    """Bytes of a full 1M real buffer (SB3 ``ReplayBuffer``, HalfCheetah spaces) and of the default model buffer."""
    env = make_env()
    before = rss_mb() if os.path.exists("/proc/self/statm") else float("nan")
    real = ReplayBuffer(1_000_000, env.observation_space, env.action_space, device="cpu")
    for name in ("observations", "next_observations", "actions", "rewards", "dones", "timeouts"):
        getattr(real, name).fill(0)  # touch every page, as a full buffer does
    real_bytes = sum(getattr(real, n).nbytes for n in ("observations", "next_observations", "actions", "rewards", "dones"))
    real_bytes += real.timeouts.nbytes
    # MBPO defaults: rollout_batch_size 100k, k=1, epoch_length / model_train_freq = 4 rounds, 1 retained epoch
    model = ModelReplayBuffer(100_000 * 1 * 4 * 1, OBS_DIM, ACT_DIM)
    model_bytes = model.storage.numel() * model.storage.element_size()
    after = rss_mb() if os.path.exists("/proc/self/statm") else float("nan")
    return {
        "real_buffer_1m_mb": real_bytes / 2**20,
        "model_buffer_mb": model_bytes / 2**20,
        "buffers_total_mb": (real_bytes + model_bytes) / 2**20,
        "buffers_rss_increase_mb": after - before,
    }


# ---------------------------------------------------------------------------------------------- report
def table(rows: list[tuple[str, str, str, str]]) -> str:
    lines = ["| measurement | ours | reference | ratio |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(lines)


def e2e_rows(r: dict[str, Any], prefix: str, what: str) -> list[tuple[str, str, str, str]]:
    """Table rows of an end-to-end measurement (keys ``{prefix}_...``)."""
    k = {key[len(prefix) + 1 :]: value for key, value in r.items() if key.startswith(prefix + "_")}
    s, e = k["window"]
    budget = k["model_round_budget_s"]
    return [
        (
            f"(c) end to end ({what}), {k['algo']} env steps/s over steps {s}-{e} (learning_starts {k['learning_starts']},"
            f" {k['gradient_steps']} updates per step)",
            f"{k['steps_per_s']:.2f}",
            f"{k['sac_steps_per_s']:.2f} (SB3 SAC, gradient_steps={k['gradient_steps']})",
            f"{k['speedup_vs_sb3_sac']:.2f}x faster",
        ),
        (
            f"(c) where {k['algo']}'s {what} time goes, s",
            f"{k['window_s']:.0f} total: {k['policy_updates_s']:.0f} SAC updates, "
            f"{k['model_round_s']:.0f} model rounds ({100 * k['model_round_share']:.0f}%)",
            f"{k['sac_window_s']:.0f} (SB3 SAC)",
            "",
        ),
        (
            f"(c) model-round time ({what}) that would still give {E2E_TARGET}x (the rest as measured), s",
            f"{k['model_round_s']:.0f}",
            f"{budget:.0f} (budget)",
            f"{k['model_round_s'] / max(budget, 1e-9):.2f}x budget" if budget > 0 else "no budget left",
        ),
        (
            f"(c) peak RSS ({what}), MB",
            f"{k['peak_rss_mb']:.0f}",
            f"{k['sac_peak_rss_mb']:.0f} (SB3 SAC)",
            f"{k['peak_rss_mb'] / k['sac_peak_rss_mb']:.2f}x",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short run (under 3 minutes on 2 cores)")
    parser.add_argument("--json", type=str, default=None, help="write the figures to this JSON file")
    parser.add_argument("--threads", type=int, default=th.get_num_threads(), help="torch intra-op threads")
    parser.add_argument("--skip-e2e", action="store_true", help="skip the end-to-end section")
    parser.add_argument(
        "--whole-run",
        type=int,
        nargs="?",
        const=15_000,
        default=None,
        metavar="STEPS",
        help="also measure a whole run of STEPS env steps (default 15000, as make train; hours on 2 cores)",
    )
    parser.add_argument("--e2e-worker", type=str, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--window", type=int, nargs=2, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--learning-starts", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    th.set_num_threads(args.threads)
    if args.e2e_worker is not None:
        e2e_worker(args.e2e_worker, args.window[0], args.learning_starts)
        return

    quick = args.quick
    start_time = time.perf_counter()
    info = {
        "torch": th.__version__,
        "threads": th.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        **cpu_info(),
        "quick": quick,
        "load_average_start": load_average(),
    }
    print(
        f"CPU: {info['cpu_model']} ({info['vector_extensions']}); torch {info['torch']}, {info['threads']} threads, "
        f"{info['cpu_count']} CPUs, load {info['load_average_start']}"
    )
    results: dict[str, Any] = dict(info)

    results.update(bench_update(rounds=4 if quick else 30))
    print(f"(a) done in {time.perf_counter() - start_time:.0f}s", flush=True)
    results.update(bench_ensemble(repeats=2 if quick else 7, min_seconds=0.2 if quick else 1.0))
    print(f"(b) done in {time.perf_counter() - start_time:.0f}s", flush=True)
    results.update(bench_memory())
    if not args.skip_e2e:
        if quick:  # one model round (at step 1001) in 100 steps: 2.5x the default share of model learning
            window, learning_starts, chunk = (1000, 1100), 1000, 25
        else:
            window, learning_starts, chunk = (5000, 6000), 5000, 50
        results.update(bench_e2e(window[0], window[1], learning_starts, chunk, args.threads))
        print(f"(c) done in {time.perf_counter() - start_time:.0f}s", flush=True)
        if args.whole_run:
            results.update(bench_whole_run(args.whole_run, args.threads))
            print(f"(c) whole run done in {time.perf_counter() - start_time:.0f}s", flush=True)
    results["load_average_end"] = load_average()
    results["total_seconds"] = time.perf_counter() - start_time

    r = results
    rows = [
        (
            "(a) SAC gradient step, batch 256, ms",
            f"{r['fast_update_ms_per_step']:.2f}",
            f"{r['sb3_sac_train_ms_per_step']:.2f} (SB3 SAC.train)",
            f"{r['update_speedup_vs_sb3_sac']:.2f}x faster",
        ),
        (
            f"(a) FLOP floor of one update ({r['update_gflop']:.2f} GFLOP at "
            f"{r['update_matmul_peak_gflops']:.0f} GFLOP/s), ms",
            f"{r['fast_update_ms_per_step']:.2f} ({r['update_floor_ratio']:.2f}x floor)",
            f"{r['sb3_sac_train_ms_per_step']:.2f} ({r['update_speedup_bound']:.2f}x floor)",
            f"floor {r['update_floor_ms']:.2f} ms: at most {r['update_speedup_bound']:.2f}x faster than SB3",
        ),
        (
            "(a) same, MBPO mixed batches (5% real), ms",
            f"{r['mixed_fast_update_ms_per_step']:.2f}",
            f"{r['mixed_sb3_sac_train_ms_per_step']:.2f} (SB3 SAC.train)",
            f"{r['mixed_update_speedup_vs_sb3_sac']:.2f}x faster",
        ),
        (
            "(b) ensemble epoch, 20k transitions, s",
            f"{r['ensemble_epoch_s']:.3f} ({r['ensemble_epoch_samples_per_s']:,.0f} samples/s)",
            f"{r['ensemble_epoch_floor_s']:.3f} (FLOP floor: {r['ensemble_epoch_gflop']:.1f} GFLOP at "
            f"{r['ensemble_train_peak_gflops']:.0f} GFLOP/s)",
            f"{r['ensemble_epoch_floor_ratio']:.2f}x floor",
        ),
        (
            "(b) rollout step, 100k states, s",
            f"{r['rollout_s']:.3f} ({r['rollout_samples_per_s']:,.0f} samples/s)",
            f"{r['rollout_floor_s']:.3f} (FLOP floor: {r['rollout_gflop']:.1f} GFLOP at "
            f"{r['rollout_peak_gflops']:.0f} GFLOP/s)",
            f"{r['rollout_floor_ratio']:.2f}x floor",
        ),
    ]
    for prefix, what in (("whole_run", "whole run"), ("e2e", "window")):
        if f"{prefix}_steps_per_s" in r:
            rows += e2e_rows(r, prefix, what)
    rows.append(
        (
            "(d) 1M real buffer + default model buffer, MB",
            f"{r['buffers_total_mb']:.0f} ({r['real_buffer_1m_mb']:.0f} + {r['model_buffer_mb']:.0f}; "
            f"RSS +{r['buffers_rss_increase_mb']:.0f})",
            "2048 (budget)",
            f"{r['buffers_total_mb'] / 2048:.2f}x budget",
        )
    )
    print()
    print(f"CPU: {r['cpu_model']} ({r['vector_extensions']}), {r['threads']} torch threads")
    print(table(rows))
    print(f"\nload average: {r['load_average_start']} (start) -> {r['load_average_end']} (end); {r['total_seconds']:.0f}s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
