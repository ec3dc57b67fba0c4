"""
RL Zoo (``rl_zoo3``) integration: registration of ``mbpo`` / ``mbpo_tom`` and their Optuna samplers.

RL Zoo has no plugin mechanism, so installing sb3-tom also installs a start-up import hook
(``sb3_tom_zoo.pth`` + ``_sb3_tom_zoo_hook.py``, see ``build_backend/``). When RL Zoo's modules are imported,
the hook calls :func:`patch_module` on each of them right after it has executed:

* ``rl_zoo3.utils``: ``ALGOS["mbpo"] = MBPO`` and ``ALGOS["mbpo_tom"] = MBPO_TOM`` (so ``--algo`` accepts them in
  ``train``, ``enjoy``, ``record_video``, ...);
* ``rl_zoo3.hyperparams_opt``: samplers and converters for ``-optimize`` / ``--trial-id``;
* ``rl_zoo3.exp_manager``: without ``-conf``, ``ExperimentManager`` reads the hyperparameters shipped with
  sb3-tom (``hyperparams/mbpo.yml``, ``hyperparams/mbpo_tom.yml``) instead of RL Zoo's folder.

Nothing here imports ``rl_zoo3`` at module level (this module is imported while RL Zoo's modules load).
Without the hook (e.g. ``python -S``), call :func:`register` before using RL Zoo's Python API.
"""

import functools
import importlib
import inspect
from pathlib import Path
from types import ModuleType
from typing import Any

import gymnasium as gym
import optuna

from sb3_tom.tom.divergence import F_DIVERGENCES

#: RL Zoo algorithm name -> name of the class exported by ``sb3_tom``.
ALGO_CLASS_NAMES = {"mbpo": "MBPO", "mbpo_tom": "MBPO_TOM"}


def default_config_path(algo: str) -> Path | None:
    """
    The hyperparameter file RL Zoo uses for ``algo`` when no ``-conf`` is given.

    A regular install carries them in ``sb3_tom/hyperparams/``; an editable install (or a source checkout on
    ``sys.path``) uses the top-level ``hyperparams/`` folder of the source tree, their single source of truth.
    """
    package_dir = Path(__file__).resolve().parent
    candidates = [package_dir / "hyperparams"]
    if (package_dir.parent / "setup.cfg").is_file():
        candidates.append(package_dir.parent / "hyperparams")
    for folder in candidates:
        path = folder / f"{algo}.yml"
        if path.is_file():
            return path
    return None


#: Keys of RL Zoo's hyperparameter files that are not constructor arguments of the algorithm.
ZOO_ONLY_KEYS = (
    "n_timesteps",
    "policy",
    "normalize",
    "n_envs",
    "env_wrapper",
    "vec_env_wrapper",
    "callback",
    "frame_stack",
    "env_kwargs",
    "monitor_kwargs",
)


def _config_entry(algo: str, env_id: str) -> dict[str, Any]:
    """The entry of ``env_id`` in the hyperparameter file of ``algo`` shipped with sb3-tom, as written."""
    import yaml

    if algo not in ALGO_CLASS_NAMES:
        raise ValueError(f"Unknown algorithm {algo!r}: expected one of {sorted(ALGO_CLASS_NAMES)}.")
    path = default_config_path(algo)
    if path is None:
        raise ValueError(f"The hyperparameter file of {algo!r} is not installed (reinstall sb3-tom).")
    with open(path) as file:
        table = yaml.safe_load(file)
    if env_id not in table:
        raise ValueError(f"{path.name} has no entry for {env_id!r}; known environments: {', '.join(sorted(table))}.")
    return dict(table[env_id])


def hyperparameters(algo: str, env_id: str) -> dict[str, Any]:
    """
    Constructor arguments of ``algo`` (``"mbpo"`` or ``"mbpo_tom"``) for ``env_id`` from the hyperparameter files
    shipped with sb3-tom (the ones RL Zoo uses), without RL Zoo's own keys (``n_timesteps``, ``policy``, ...)::

        MBPO_TOM("MlpPolicy", "Hopper-v4", **hyperparameters("mbpo_tom", "Hopper-v4"))

    Options of the environment itself (``env_kwargs`` and ``env_wrapper``, e.g. Ant-v5's and Humanoid's observation
    truncation as in MBPO) are not included: RL Zoo applies them when it builds the env; :func:`make_env` does the
    same when you build it yourself.

    :raises ValueError: unknown ``algo``, or no entry for ``env_id``.
    """
    params = _config_entry(algo, env_id)
    for key in ZOO_ONLY_KEYS:
        params.pop(key, None)
    return params


def make_env(algo: str, env_id: str) -> gym.Env:
    """
    ``env_id`` as RL Zoo builds it for ``algo`` from the shipped hyperparameter file: ``gym.make`` with its
    ``env_kwargs``, then its ``env_wrapper`` (read by RL Zoo's own parser), e.g. Humanoid-v4 cut to MBPO's 45-D
    observation::

        MBPO_TOM("MlpPolicy", make_env("mbpo_tom", "Humanoid-v4"), **hyperparameters("mbpo_tom", "Humanoid-v4"))

    :raises ValueError: unknown ``algo``, or no entry for ``env_id``.
    """
    from rl_zoo3.utils import get_wrapper_class

    entry = _config_entry(algo, env_id)
    env = gym.make(env_id, **(entry.get("env_kwargs") or {}))
    wrap = get_wrapper_class(entry)
    return env if wrap is None else wrap(env)


def sample_mbpo_params(trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """Sampler for MBPO hyperparameters (SAC's learning rate, batch size, discount and Polyak coefficient, plus
    the model-based ones: gradient steps per env step, real-data ratio, rollout length, model training period
    and ensemble learning rate)."""
    sampled: dict[str, Any] = {
        "learning_rate": trial.suggest_float("learning_rate", 1e-4, 1e-3, log=True),
        # 2**7=128 .. 2**9=512
        "batch_size_pow": trial.suggest_int("batch_size_pow", 7, 9),
        "one_minus_gamma": trial.suggest_float("one_minus_gamma", 0.001, 0.03, log=True),
        "tau": trial.suggest_float("tau", 0.001, 0.02, log=True),
        "gradient_steps": trial.suggest_categorical("gradient_steps", [5, 10, 20, 40]),
        "real_ratio": trial.suggest_float("real_ratio", 0.01, 0.5, log=True),
        "rollout_length": trial.suggest_int("rollout_length", 1, 15),
        "model_train_freq": trial.suggest_categorical("model_train_freq", [100, 250, 500, 1000]),
        "dynamics_learning_rate": trial.suggest_float("dynamics_learning_rate", 1e-4, 3e-3, log=True),
    }
    trial.set_user_attr("gamma", 1 - sampled["one_minus_gamma"])
    trial.set_user_attr("batch_size", 2 ** sampled["batch_size_pow"])
    return convert_mbpo_params(sampled)


def convert_mbpo_params(sampled_params: dict[str, Any]) -> dict[str, Any]:
    """Turn sampled (or stored Optuna trial) parameters into MBPO / MBPO_TOM constructor arguments."""
    hyperparams = dict(sampled_params)
    if "one_minus_gamma" in hyperparams:
        hyperparams["gamma"] = 1 - hyperparams.pop("one_minus_gamma")
    if "batch_size_pow" in hyperparams:
        hyperparams["batch_size"] = 2 ** hyperparams.pop("batch_size_pow")
    return hyperparams


def sample_mbpo_tom_params(trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """Sampler for MBPO_TOM: the MBPO search space plus TOM's policy buffer size, f-divergence and weight clip."""
    hyperparams = sample_mbpo_params(trial, n_actions, n_envs, additional_args)
    hyperparams.update(
        {
            "policy_buffer_size": trial.suggest_categorical("policy_buffer_size", [250, 1000, 5000]),
            "f_divergence": trial.suggest_categorical("f_divergence", list(F_DIVERGENCES)),
            "weight_clip": trial.suggest_float("weight_clip", 2.0, 100.0, log=True),
        }
    )
    return hyperparams


SAMPLERS = {"mbpo": sample_mbpo_params, "mbpo_tom": sample_mbpo_tom_params}
CONVERTERS = {"mbpo": convert_mbpo_params, "mbpo_tom": convert_mbpo_params}


def _register_algos(algos: dict[str, Any]) -> None:
    import sb3_tom

    for algo, class_name in ALGO_CLASS_NAMES.items():
        algo_class = getattr(sb3_tom, class_name, None)
        if algo_class is not None:
            algos[algo] = algo_class


def _patch_experiment_manager(manager_class: type) -> None:
    init = manager_class.__init__  # type: ignore[misc]
    if getattr(init, "sb3_tom_patched", False):
        return
    signature = inspect.signature(init)

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        # RL Zoo looks for f"{algo}.yml" next to its own package: use ours unless -conf was given
        if self.algo in ALGO_CLASS_NAMES and not signature.bind(self, *args, **kwargs).arguments.get("config"):
            path = default_config_path(self.algo)
            if path is not None:
                self.config = str(path)

    setattr(__init__, "sb3_tom_patched", True)  # noqa: B010
    manager_class.__init__ = __init__  # type: ignore[misc]


def patch_module(module: ModuleType) -> None:
    """Register sb3-tom in one of RL Zoo's modules (idempotent); other modules are left alone."""
    if module.__name__ == "rl_zoo3.utils":
        _register_algos(module.ALGOS)
    elif module.__name__ == "rl_zoo3.hyperparams_opt":
        module.HYPERPARAMS_SAMPLER.update(SAMPLERS)
        module.HYPERPARAMS_CONVERTER.update(CONVERTERS)
    elif module.__name__ == "rl_zoo3.exp_manager":
        _patch_experiment_manager(module.ExperimentManager)


def register() -> None:
    """Import RL Zoo and register sb3-tom's algorithms in it (what the start-up hook does lazily)."""
    for name in ("rl_zoo3.utils", "rl_zoo3.hyperparams_opt", "rl_zoo3.exp_manager"):
        patch_module(importlib.import_module(name))
