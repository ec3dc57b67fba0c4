"""
The four hot loops of an MBPO_TOM run, each computed three ways in one run, and what each costs in a whole run.

    python benchmarks/hot_loops.py [--threads N] [--rounds R] [--json PATH]

Loops (HalfCheetah-v4 sizes, the shipped hyperparameters): SAC's gradient step (batch 256, 256x256 networks), the
ensemble's training step (7 members, 4x200, 256 rows per member, weighted NLL), the dual's step (256x256, batch 256)
and the discriminator's step (BCE + gradient penalty, batch 256). Ways:

* ``written-out``: a hand-derived gradient, where the package has one (only SAC's, ``MLPSACStep``, is kept; the
  ensemble's and the dual's were measured, then deleted: ``benchmarks/RESULTS.md``); for SAC also with the oneDNN
  matmuls off (the BLAS instead), which is what runs on CPUs without AVX-512, and with the ReLU gradient as the public
  mask product instead of ``aten::threshold_backward`` (``kernels.relu_backward``);
* ``autograd+kernels``: the autograd definition with its matmuls on :mod:`sb3_tom.kernels` (oneDNN on CPU), the
  package's default where no written-out gradient is kept. For SAC, SB3's policy modules are routed through
  ``kernels.linear`` for the measurement only;
* ``autograd, kernels off``: the same with ``SB3_TOM_FAST_KERNELS=0`` (public PyTorch ops only).

The ways take turns in rounds so that load changes hit them alike; each figure is the median over rounds of the mean
time per step. A whole run's share: the number of steps of each loop in a ``make train``-sized run (15,000 env steps,
5,000 random, 40 SAC updates per env step, a model round every 250 steps) times the time saved per step, over the
run's time as the sum of the four loops (the rest of a run, env steps and rollouts, is left out, so the shares are
upper bounds). The CPU model and its vector extensions are printed with the table.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch as th
from stable_baselines3 import SAC
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from machine import cpu_info

from sb3_tom import kernels
from sb3_tom.buffers import Transitions
from sb3_tom.dynamics.ensemble import GaussianEnsemble
from sb3_tom.dynamics.training import EnsembleTrainer
from sb3_tom.mbpo.fast_sac import AutogradSACStep
from sb3_tom.mbpo.mlp_sac import MLPSACStep
from sb3_tom.tom.discriminator import TransitionDiscriminator, make_discriminator_optimizer, train_discriminator
from sb3_tom.tom.dual import DualTrainer, DualValue

OBS, ACT, BATCH = 17, 6, 256
# A make-train-sized HalfCheetah run: 15,000 steps, 5,000 random, 40 SAC updates per step, a round every 250 steps
RUN_STEPS, LEARNING_STARTS, GRADIENT_STEPS, TRAIN_FREQ = 15_000, 5_000, 40, 250
DUAL_STEPS, DISCRIMINATOR_STEPS, HOLDOUT_RATIO, MAX_HOLDOUT = 1000, 400, 0.2, 5000


def run_counts(epochs_per_round: float) -> dict[str, float]:
    """Steps of each loop in a whole run (ensemble: ``epochs_per_round`` epochs of minibatches of 256 per round)."""
    rounds = list(range(LEARNING_STARTS, RUN_STEPS, TRAIN_FREQ))
    ensemble = 0.0
    for n in rounds:
        n_train = n - min(int(n * HOLDOUT_RATIO), MAX_HOLDOUT)
        ensemble += epochs_per_round * math.ceil(n_train / BATCH)
    return {
        "sac": (RUN_STEPS - LEARNING_STARTS) * GRADIENT_STEPS,
        "ensemble": ensemble,
        "dual": len(rounds) * DUAL_STEPS,
        "discriminator": len(rounds) * DISCRIMINATOR_STEPS,
    }


@contextmanager
def fast(enabled: bool, onednn: bool | None = None, threshold_backward: bool = True) -> Iterator[None]:
    """Fast kernels on or off; ``onednn`` None keeps the package's choice for this CPU (``kernels.onednn_default``)."""
    previous = kernels.fast_kernels(), kernels.onednn_enabled()
    available = kernels.AVAILABLE["threshold_backward"]
    kernels.set_fast_kernels(enabled, onednn=onednn)
    kernels.AVAILABLE["threshold_backward"] = available and threshold_backward
    try:
        yield
    finally:
        kernels.set_fast_kernels(*previous)
        kernels.AVAILABLE["threshold_backward"] = available


@contextmanager
def linear_modules_on_kernels() -> Iterator[None]:
    """Route every ``nn.Linear`` through ``kernels.linear`` (measurement only)."""
    original = nn.Linear.forward
    nn.Linear.forward = lambda self, x: kernels.linear(x, self.weight, self.bias)  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Linear.forward = original  # type: ignore[method-assign]


def sac_batch() -> ReplayBufferSamples:
    return ReplayBufferSamples(
        th.randn(BATCH, OBS), th.rand(BATCH, ACT) * 2 - 1, th.randn(BATCH, OBS), th.zeros(BATCH, 1), th.randn(BATCH, 1)
    )


def sac_loops() -> dict[str, Callable[[int], None]]:
    env = gym.make("HalfCheetah-v4")
    names = ("written", "onednn", "mkl", "mask", "autograd", "off")
    models = {name: SAC("MlpPolicy", env, seed=0, device="cpu") for name in names}
    batches = [sac_batch() for _ in range(8)]

    def loop(
        name: str,
        make_step: Callable[[SAC], Any],
        enabled: bool,
        patch: bool,
        onednn: bool | None = None,
        threshold_backward: bool = True,
    ) -> Callable[[int], None]:
        model = models[name]
        step = make_step(model)

        def run(n: int) -> None:
            with fast(enabled, onednn, threshold_backward):
                context = linear_modules_on_kernels() if patch else nullcontext()
                with context:
                    for i in range(n):
                        step(batches[i % len(batches)])

        return run

    return {
        "written-out": loop("written", MLPSACStep, True, False),
        "written-out, oneDNN matmuls": loop("onednn", MLPSACStep, True, False, onednn=True),
        "written-out, BLAS matmuls": loop("mkl", MLPSACStep, True, False, onednn=False),
        "written-out, mask-product ReLU gradient": loop("mask", MLPSACStep, True, False, threshold_backward=False),
        "autograd+kernels": loop("autograd", AutogradSACStep, True, True),
        "autograd, kernels off": loop("off", AutogradSACStep, False, False),
    }


def ensemble_loops() -> dict[str, Callable[[int], None]]:
    inputs, targets, weight = th.randn(7, BATCH, OBS + ACT), th.randn(7, BATCH, OBS + 1), th.rand(7, BATCH) * 2

    def loop(enabled: bool) -> Callable[[int], None]:
        trainer = EnsembleTrainer(GaussianEnsemble(OBS, ACT))
        params = list(trainer.ensemble.parameters())
        adam = kernels.AdamKernel(trainer.optimizer, params)

        def run(n: int) -> None:
            with fast(enabled):
                for _ in range(n):
                    adam.step(list(th.autograd.grad(trainer.loss(inputs, targets, weight), params)))

        return run

    # the written-out gradient was deleted (measured in benchmarks/RESULTS.md)
    return {"autograd+kernels": loop(True), "autograd, kernels off": loop(False)}


def dual_loops() -> dict[str, Callable[[int], None]]:
    n = 15_000
    data = Transitions(th.randn(n, OBS), th.rand(n, ACT), th.randn(n), th.randn(n, OBS), (th.rand(n) < 0.01).float())
    log_ratio, starts = th.randn(n) * 0.3, th.randn(200, OBS)

    def sample_actions(obs: th.Tensor) -> th.Tensor:
        return th.rand(obs.shape[0], ACT) * 2 - 1

    def loop(enabled: bool) -> Callable[[int], None]:
        trainer = DualTrainer(DualValue(OBS, ACT))

        def run(steps: int) -> None:
            with fast(enabled):
                trainer.train(data, log_ratio, starts, sample_actions, steps)

        return run

    # the written-out gradient was deleted (measured in benchmarks/RESULTS.md)
    return {"autograd+kernels": loop(True), "autograd, kernels off": loop(False)}


def discriminator_loops() -> dict[str, Callable[[int], None]]:
    recent, buffer = th.randn(1000, 2 * OBS + ACT), th.randn(15_000, 2 * OBS + ACT)

    def loop(enabled: bool) -> Callable[[int], None]:
        discriminator = TransitionDiscriminator(OBS, ACT)
        optimizer = make_discriminator_optimizer(discriminator)

        def run(steps: int) -> None:
            with fast(enabled):
                train_discriminator(discriminator, recent, buffer, optimizer, n_steps=steps)

        return run

    return {"autograd+kernels": loop(True), "autograd, kernels off": loop(False)}


def measure(loops: dict[str, Callable[[int], None]], steps: int, rounds: int) -> dict[str, float]:
    """Median over ``rounds`` of the ms per step of each way, the ways taking turns."""
    for run in loops.values():  # warm-up: first-call setup, optimizer state
        run(max(2, steps // 5))
    times: dict[str, list[float]] = {name: [] for name in loops}
    for _ in range(rounds):
        for name, run in loops.items():
            start = time.perf_counter()
            run(steps)
            times[name].append(1000 * (time.perf_counter() - start) / steps)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: PyTorch's)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs-per-round", type=float, default=50.0, help="ensemble epochs per model round")
    parser.add_argument("--json", default=None)
    parser.add_argument("--loops", nargs="+", default=["sac", "ensemble", "dual", "discriminator"])
    args = parser.parse_args()
    if args.threads is not None:
        th.set_num_threads(args.threads)
    th.manual_seed(0)
    info = {**cpu_info(), "torch_threads": str(th.get_num_threads()), "torch": th.__version__}
    print(", ".join(f"{k}: {v}" for k, v in info.items()), flush=True)
    counts = run_counts(args.epochs_per_round)
    per_step: dict[str, dict[str, float]] = {}
    for name, make, steps in [
        ("sac", sac_loops, 100),
        ("ensemble", ensemble_loops, 50),
        ("dual", dual_loops, 100),
        ("discriminator", discriminator_loops, 40),
    ]:
        if name not in args.loops:
            continue
        per_step[name] = measure(make(), steps, args.rounds)
        print(name, {k: round(v, 3) for k, v in per_step[name].items()}, flush=True)

    def default(loop: str) -> float:
        return per_step[loop].get("written-out", per_step[loop]["autograd+kernels"])

    run_s = sum(counts[loop] * default(loop) / 1000 for loop in per_step)
    print(f"\nwhole run (sum of the four loops, {args.epochs_per_round:g} ensemble epochs per round): {run_s / 60:.1f} min")
    header = "| loop | steps per run | written-out ms | autograd+kernels ms | autograd, kernels off ms |"
    print(header + " written-out saves (share of run) | kernels save (share of run) |")
    print("|" + "---|" * 7)
    rows = {}
    for loop, times in per_step.items():
        written = times.get("written-out")
        autograd, off = times["autograd+kernels"], times["autograd, kernels off"]
        written_share = None if written is None else counts[loop] * (autograd - written) / 1000 / run_s
        kernels_share = counts[loop] * (off - autograd) / 1000 / run_s
        rows[loop] = {
            "steps_per_run": counts[loop],
            "written_out_ms": written,
            "autograd_kernels_ms": autograd,
            "autograd_kernels_off_ms": off,
            "written_out_share_of_run": written_share,
            "kernels_share_of_run": kernels_share,
            "ms_per_step": times,
        }
        written_text = "deleted" if written is None else f"{written:.3f}"
        saved = "n/a" if written_share is None else f"{autograd / written:.2f}x ({100 * written_share:.1f}%)"
        print(
            f"| {loop} | {counts[loop]:,.0f} | {written_text} | {autograd:.3f} | {off:.3f} | {saved} |"
            f" {off / autograd:.2f}x ({100 * kernels_share:.1f}%) |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "whole_run_s": run_s, "loops": rows}, indent=1))


if __name__ == "__main__":
    main()
