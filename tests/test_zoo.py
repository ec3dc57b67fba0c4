"""
RL Zoo integration, through the real command lines in subprocesses.

sb3-tom is installed into throwaway virtual environments (layered on the interpreter running the tests through a
path-only ``.pth``, so nothing is downloaded): one from an sdist built by our PEP 517 backend (sdist -> wheel ->
install, the path of ``pip install .``), one editable (PEP 660, ``pip install -e .``). Commands run from a temporary
directory, so the checkout itself is never importable and only the installed start-up hook can register
``mbpo``/``mbpo_tom`` with RL Zoo.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from sb3_tom.wrappers import TruncatedObservation

REPO = Path(__file__).resolve().parents[1]
ALGOS = ["mbpo", "mbpo_tom"]
# A few hundred steps with everything shrunk; batch_size below learning_starts so SAC updates do run
TINY = ["learning_starts:100", "gradient_steps:1", "rollout_batch_size:200", "model_train_freq:100", "batch_size:64"]
TINY += ["model_max_epochs:5"]
# TOM's reweighting starts once policy_buffer_size real transitions exist: make it start within the tiny runs
TINY_TOM = ["policy_buffer_size:50", "discriminator_steps:20", "dual_steps:20"]
HEAVY_MODULES = ["numpy", "torch", "stable_baselines3", "sb3_tom", "rl_zoo3", "optuna", "gymnasium", "yaml"]

# What building the distribution needs, without build outputs (stale build/ files could leak into wheels)
_SOURCE_DIRS = ("sb3_tom", "hyperparams", "build_backend")
_SOURCE_FILES = ("setup.cfg", "pyproject.toml", "MANIFEST.in", "README.md", "LICENSE")
_COPY_IGNORE = shutil.ignore_patterns("__pycache__", "*.egg-info")


def _env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    env.update(MPLBACKEND="Agg", SDL_VIDEODRIVER="dummy", SDL_AUDIODRIVER="dummy", OMP_NUM_THREADS="1")
    return env


def run(cmd: list, cwd: Path, timeout: float = 300) -> str:
    """Run a command, fail the test with its output unless it exits with 0, and return its output."""
    proc = subprocess.run(
        [str(part) for part in cmd],
        cwd=cwd,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} exited with {proc.returncode}:\n{proc.stdout[-6000:]}"
    return proc.stdout


def make_venv(path: Path) -> Path:
    """A venv without pip that also sees the test interpreter's site-packages (after its own)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], check=True, capture_output=True, text=True
    ).stdout.strip()
    Path(purelib, "_parent_env.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return python


def copy_source(target: Path) -> Path:
    """The working tree's package sources and packaging files (tracked or not) in a fresh folder."""
    for name in _SOURCE_DIRS:
        shutil.copytree(REPO / name, target / name, ignore=_COPY_IGNORE)
    for name in _SOURCE_FILES:
        if (REPO / name).is_file():
            shutil.copy2(REPO / name, target / name)
    return target


def pip_install(python: Path, *args: object) -> None:
    run([python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "-q", *args], cwd=python.parent)


@pytest.fixture(scope="session")
def installed(tmp_path_factory) -> Path:
    """Python of a venv where sb3-tom was installed from an sdist made by the project's build backend."""
    root = tmp_path_factory.mktemp("installed")
    source = copy_source(root / "src")
    code = "import sys; sys.path.insert(0, 'build_backend'); import sb3_tom_build as b; print(b.build_sdist(sys.argv[1]))"
    sdist = run([sys.executable, "-c", code, root / "dist"], cwd=source).strip().splitlines()[-1]
    python = make_venv(root / "venv")
    pip_install(python, root / "dist" / sdist)
    return python


@pytest.fixture
def workdir(tmp_path) -> Path:
    work = tmp_path / "elsewhere"
    work.mkdir()
    return work


def tiny(algo: str) -> list[str]:
    return TINY + (TINY_TOM if algo == "mbpo_tom" else [])


def rl_zoo3_script() -> Path:
    """The `rl_zoo3` console script installed with RL Zoo next to the test interpreter."""
    script = shutil.which("rl_zoo3", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("RL Zoo's console script is not installed next to the test interpreter")
    return Path(script)


def zoo(python: Path, cwd: Path, script: str, *args: object) -> str:
    """``python -m rl_zoo3.<script> args``."""
    return run([python, "-m", f"rl_zoo3.{script}", *args], cwd=cwd)


def train(python: Path, cwd: Path, algo: str, env_id: str, *extra: object, steps: int = 300) -> str:
    common = ["-n", steps, "-f", "logs", "--seed", 0, "--num-threads", 1, "--hyperparams", *tiny(algo)]
    return zoo(python, cwd, "train", "--algo", algo, "--env", env_id, *common, *extra)


def site_packages(python: Path) -> Path:
    code = "import sysconfig; print(sysconfig.get_path('purelib'))"
    return Path(run([python, "-c", code], cwd=python.parent).strip())


@pytest.mark.slow  # builds and installs the package
def test_installed_distribution_carries_the_license(installed, workdir):
    code = "import importlib.metadata as m; print([str(f) for f in m.files('sb3-tom') if f.name == 'LICENSE'])"
    files = run([installed, "-c", code], cwd=workdir).strip()
    assert "LICENSE" in files, files
    code = "import importlib.metadata as m; print(m.metadata('sb3-tom')['License'])"
    assert run([installed, "-c", code], cwd=workdir).strip() == "MIT"


@pytest.mark.slow  # builds and installs the package
def test_startup_hook_is_lazy(installed, workdir):
    site = site_packages(installed)
    assert (site / "sb3_tom_zoo.pth").read_text().strip() == "import _sb3_tom_zoo_hook; _sb3_tom_zoo_hook.install()"
    assert (site / "sb3_tom_zoo.start").is_file()
    code = "import json, sys; print(json.dumps([sorted(sys.modules), [type(f).__name__ for f in sys.meta_path]]))"
    modules, finders = json.loads(run([installed, "-c", code], cwd=workdir))
    assert "_sb3_tom_zoo_hook" in modules
    assert finders[0] == "ZooImportHook"
    assert not [name for name in modules if name.split(".")[0] in HEAVY_MODULES]


@pytest.mark.slow  # builds and installs the package
def test_pep_829_start_file_registers_like_the_pth_line(installed, workdir):
    """
    Python 3.15+ runs the entry point of ``sb3_tom_zoo.start`` instead of the ``.pth`` import line (and 3.18+ ignores
    import lines). This Python predates PEP 829, so the test does what its ``site`` does: without site processing
    (``-S``), resolve the entry point with ``pkgutil.resolve_name``, call it, then use RL Zoo.
    """
    site = site_packages(installed)
    assert (site / "sb3_tom_zoo.start").read_text() == "_sb3_tom_zoo_hook:install\n"
    code = (
        "import pkgutil, sys\n"
        "site_dir, parent_pth = sys.argv[1:3]\n"
        "sys.path += [site_dir, open(parent_pth).read().strip()]\n"
        "entry = open(site_dir + '/sb3_tom_zoo.start').read().strip()\n"
        "pkgutil.resolve_name(entry)(); pkgutil.resolve_name(entry)()\n"
        "print(sum(getattr(f, 'sb3_tom_zoo_hook', False) for f in sys.meta_path))\n"
        "import rl_zoo3.utils; print(sorted(k for k in rl_zoo3.utils.ALGOS if k.startswith('mbpo')))\n"
    )
    out = run([installed, "-S", "-c", code, site, site / "_parent_env.pth"], cwd=workdir).strip().splitlines()
    assert out[-2:] == ["1", "['mbpo', 'mbpo_tom']"]


@pytest.mark.slow  # builds and installs the package
def test_registered_in_rl_zoo(installed, workdir):
    code = """
import json, sb3_tom
from rl_zoo3 import ALGOS
from rl_zoo3.exp_manager import ExperimentManager
from rl_zoo3.hyperparams_opt import HYPERPARAMS_CONVERTER, HYPERPARAMS_SAMPLER

def config(algo, **kwargs):
    return ExperimentManager(None, algo, "Pendulum-v1", "logs", **kwargs).config

print(json.dumps({
    "classes": {algo: ALGOS[algo].__name__ for algo in ("mbpo", "mbpo_tom") if algo in ALGOS},
    "same": [ALGOS[algo] is getattr(sb3_tom, ALGOS[algo].__name__) for algo in ("mbpo", "mbpo_tom") if algo in ALGOS],
    "samplers": sorted(set(HYPERPARAMS_SAMPLER) & set(HYPERPARAMS_CONVERTER) & {"mbpo", "mbpo_tom"}),
    "config": {algo: config(algo) for algo in ("mbpo", "mbpo_tom", "sac")},
    "conf_override": config("mbpo", config="custom.yml"),
    "sb3_tom": sb3_tom.__file__,
}))
"""
    result = json.loads(run([installed, "-c", code], cwd=workdir).strip().splitlines()[-1])
    assert result["classes"] == {"mbpo": "MBPO", "mbpo_tom": "MBPO_TOM"}
    assert all(result["same"])
    assert result["samplers"] == ["mbpo", "mbpo_tom"]
    package = Path(result["sb3_tom"]).parent
    assert package.is_relative_to(installed.parent.parent)
    for algo in ALGOS:
        assert Path(result["config"][algo]) == package / "hyperparams" / f"{algo}.yml"
        assert Path(result["config"][algo]).read_text() == (REPO / "hyperparams" / f"{algo}.yml").read_text()
    assert Path(result["config"]["sac"]).parent.parent.name == "rl_zoo3"
    assert result["conf_override"] == "custom.yml"


@pytest.mark.slow
@pytest.mark.parametrize("algo", ALGOS)
def test_train_enjoy_continue_record_plot(installed, workdir, algo):
    env_args = ("--algo", algo, "--env", "Pendulum-v1", "-f", "logs")
    checkpoints = ("--eval-freq", 150, "--eval-episodes", 1, "--save-freq", 100, "--save-replay-buffer")
    assert f"sb3_tom/hyperparams/{algo}.yml" in train(installed, workdir, algo, "Pendulum-v1", *checkpoints)
    first = workdir / "logs" / algo / "Pendulum-v1_1"
    for name in ("Pendulum-v1.zip", "best_model.zip", "replay_buffer.pkl", "Pendulum-v1/config.yml"):
        assert (first / name).is_file(), name
    assert sorted(path.name for path in first.glob("rl_model_*_steps.zip")) == [
        f"rl_model_{n}_steps.zip" for n in (100, 200, 300)
    ]
    out = zoo(installed, workdir, "enjoy", *env_args, "--no-render", "-n", 50, "--load-last-checkpoint")
    assert "rl_model_300_steps.zip" in out

    # continue training the saved agent, with its replay buffer
    out = train(installed, workdir, algo, "Pendulum-v1", "--eval-freq", -1, "-i", first / "Pendulum-v1.zip", steps=200)
    assert "Loading pretrained agent" in out and "Loading replay buffer" in out
    second = workdir / "logs" / algo / "Pendulum-v1_2"
    assert (second / "Pendulum-v1.zip").is_file()

    zoo(installed, workdir, "record_video", *env_args, "-n", 50)
    assert list((second / "videos").glob("*.mp4"))

    assert "No artists with labels" not in zoo(installed, workdir, "plots.plot_train", *env_args, "-w", 1)


@pytest.mark.slow
@pytest.mark.parametrize("algo", ALGOS)
def test_console_command_mujoco(installed, workdir, algo):
    script = rl_zoo3_script()
    env_args = ("--algo", algo, "--env", "InvertedPendulum-v4", "-f", "logs")
    small = ("-n", 300, "--eval-freq", -1, "--num-threads", 1, "--hyperparams", *tiny(algo))
    out = run([installed, script, "train", *env_args, *small], cwd=workdir)
    assert f"sb3_tom/hyperparams/{algo}.yml" in out
    if algo == "mbpo_tom":  # the reweighted model rounds did run (logged in SB3's table)
        assert re.search(r"\|\s+active\s+\|\s+1\s", out)
    assert (workdir / "logs" / algo / "InvertedPendulum-v4_1" / "InvertedPendulum-v4.zip").is_file()
    run([installed, script, "enjoy", *env_args, "--no-render", "-n", 50], cwd=workdir)


@pytest.mark.slow
@pytest.mark.parametrize("algo", ALGOS)
def test_optimize(installed, workdir, algo):
    storage = f"sqlite:///{workdir / 'optuna.db'}"
    search = ("-optimize", "--n-trials", 2, "--n-evaluations", 1, "--eval-episodes", 1, "--no-optim-plots")
    out = train(installed, workdir, algo, "Pendulum-v1", *search, "--storage", storage, "--study-name", algo, steps=130)
    assert "Number of finished trials:  2" in out
    assert "rollout_length" in out and "real_ratio" in out
    if algo == "mbpo_tom":
        assert "policy_buffer_size" in out and "f_divergence" in out and "weight_clip" in out
    assert list((workdir / "logs" / algo).glob("report_Pendulum-v1_2-trials-130-*.csv"))


@pytest.mark.slow
def test_installed_package_runs_from_another_directory(installed, workdir):
    """The `pip install .` case: a fresh environment, run from a directory that has nothing of the project."""
    assert not (workdir / "sb3_tom").exists() and not (workdir / "hyperparams").exists()
    out = train(installed, workdir, "mbpo_tom", "Pendulum-v1", "--eval-freq", -1, steps=200)
    expected = site_packages(installed) / "sb3_tom" / "hyperparams" / "mbpo_tom.yml"
    assert f"Loading hyperparameters from: {expected}" in out
    assert (workdir / "logs" / "mbpo_tom" / "Pendulum-v1_1" / "Pendulum-v1.zip").is_file()


@pytest.mark.slow
def test_editable_install(tmp_path, workdir):
    """`pip install -e .` (PEP 660): same hook, and RL Zoo reads the source tree's hyperparams/ (no copy)."""
    source = copy_source(tmp_path / "src")
    python = make_venv(tmp_path / "venv")
    pip_install(python, "-e", source)
    assert (site_packages(python) / "sb3_tom_zoo.pth").is_file()
    config = source / "hyperparams" / "mbpo.yml"
    config.write_text(config.read_text().replace("n_timesteps: 10000", "n_timesteps: 150"))
    small = ("--eval-freq", -1, "--num-threads", 1, "--hyperparams", *TINY)
    out = zoo(python, workdir, "train", "--algo", "mbpo", "--env", "Pendulum-v1", "-f", "logs", *small)
    assert f"Loading hyperparameters from: {config}" in out
    assert "('n_timesteps', 150)" in out
    assert (workdir / "logs" / "mbpo" / "Pendulum-v1_1" / "Pendulum-v1.zip").is_file()


def test_samplers_match_converters():
    """What a sampler returns is what `--trial-id` rebuilds from the stored trial (via the converter)."""
    optuna = pytest.importorskip("optuna")
    import inspect

    import sb3_tom
    from sb3_tom.zoo import ALGO_CLASS_NAMES, CONVERTERS, SAMPLERS

    for algo, sampler in SAMPLERS.items():
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        trial = study.ask()
        sampled = sampler(trial, 1, 1, {})
        assert CONVERTERS[algo](trial.params) == sampled
        assert 0.9 < sampled["gamma"] < 1 and sampled["batch_size"] in (128, 256, 512)
        accepted: set[str] = set()
        for cls in getattr(sb3_tom, ALGO_CLASS_NAMES[algo]).__mro__:  # up to the first __init__ without **kwargs
            parameters = inspect.signature(cls.__init__).parameters
            accepted.update(parameters)
            if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
                break
        assert set(sampled) <= accepted


@pytest.mark.parametrize("algo", ["mbpo", "mbpo_tom"])
def test_shipped_hyperparameters_build_valid_agents(algo):
    """Every entry of the shipped hyperparameter files is accepted by the constructor (including its checks)."""
    import yaml

    import sb3_tom
    from sb3_tom.zoo import default_config_path, hyperparameters

    path = default_config_path(algo)
    assert path is not None
    with open(path) as file:
        env_ids = list(yaml.safe_load(file))
    assert {"HalfCheetah-v4", "Hopper-v5", "InvertedPendulum-v4", "Pendulum-v1"} <= set(env_ids)
    cls = getattr(sb3_tom, {"mbpo": "MBPO", "mbpo_tom": "MBPO_TOM"}[algo])
    for env_id in env_ids:
        params = hyperparameters(algo, env_id)
        assert "n_timesteps" not in params and "policy" not in params
        # buffer_size=1: only construction and validation are tested, not memory
        model = cls("MlpPolicy", env_id, **{**params, "buffer_size": 1000}, _init_setup_model=False)
        for key, value in params.items():
            if key != "buffer_size":
                assert getattr(model, key) == value, (env_id, key)
    # the MBPO paper's per-env settings, spelled out
    cheetah, hopper = hyperparameters(algo, "HalfCheetah-v4"), hyperparameters(algo, "Hopper-v4")
    assert (cheetah["gradient_steps"], cheetah["rollout_length"], cheetah["target_entropy"]) == (40, [20, 150, 1, 1], -3)
    assert (hopper["gradient_steps"], hopper["rollout_length"], hopper["target_entropy"]) == (20, [20, 150, 1, 15], -1)
    with pytest.raises(ValueError, match="no entry for 'NoSuchEnv-v0'"):
        hyperparameters(algo, "NoSuchEnv-v0")
    with pytest.raises(ValueError, match="Unknown algorithm"):
        hyperparameters("ppo", "Hopper-v4")


@pytest.mark.parametrize("algo", ["mbpo", "mbpo_tom"])
def test_shipped_humanoid_observation_is_mbpos_truncated_one(algo):
    """Humanoid-v4 and -v5 as RL Zoo builds them from the shipped files: MBPO's 45-D ``qpos[2:], qvel``."""
    from sb3_tom.zoo import make_env

    for env_id in ["Humanoid-v4", "Humanoid-v5"]:
        env = make_env(algo, env_id)
        assert env.observation_space.shape == (45,), env_id
        obs, _ = env.reset(seed=0)
        for _ in range(3):
            data = env.unwrapped.data  # type: ignore[attr-defined]
            np.testing.assert_allclose(obs, np.concatenate([data.qpos[2:], data.qvel]), err_msg=env_id)
            obs, *_ = env.step(env.action_space.sample())
    # the wrapper only cuts: other envs come out of make_env as gym.make builds them (with their env_kwargs)
    assert make_env(algo, "Ant-v5").observation_space.shape == (27,)
    assert make_env(algo, "Hopper-v4").observation_space.shape == (11,)
    with pytest.raises(ValueError, match="size must be in"):
        TruncatedObservation(make_env(algo, "Hopper-v4"), 12)


@pytest.mark.slow
def test_distributed_optimize_on_one_journal_then_train_a_stored_trial(installed, workdir):
    """
    Two concurrent ``-optimize`` workers share one Optuna journal file, as the README shows: the study ends with
    every trial of both workers (none lost or duplicated), and ``--trial-id`` then trains with that trial's values.
    """
    import optuna
    import yaml

    from sb3_tom.zoo import convert_mbpo_params

    storage = str(workdir / "study.log")
    search = ("-optimize", "--n-trials", 2, "--n-evaluations", 1, "--eval-episodes", 1, "--no-optim-plots")
    common = ["-n", 130, "-f", "logs", "--num-threads", 1, "--hyperparams", *tiny("mbpo"), *search]
    common += ["--storage", storage, "--study-name", "shared"]
    workers = [
        subprocess.Popen(
            [str(installed), "-m", "rl_zoo3.train", "--algo", "mbpo", "--env", "Pendulum-v1", "--seed", str(seed),
             *map(str, common)],
            cwd=workdir, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for seed in (1, 2)
    ]  # fmt: skip
    outputs = [worker.communicate(timeout=600)[0] for worker in workers]
    assert all(worker.returncode == 0 for worker in workers), "\n".join(out[-3000:] for out in outputs)

    journal = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(storage))
    trials = optuna.load_study(storage=journal, study_name="shared").trials
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials), [t.state for t in trials]
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 4  # four distinct samples

    # RL Zoo skips --trial-id 0 (a falsy id): take trial 1
    expected = convert_mbpo_params(trials[1].params)
    out = train(installed, workdir, "mbpo", "Pendulum-v1", "--storage", storage, "--study-name", "shared",
                "--trial-id", 1, "--eval-freq", -1, steps=130)  # fmt: skip
    assert "Loading from Optuna study..." in out
    run_dir = sorted((workdir / "logs" / "mbpo").glob("Pendulum-v1_*"), key=lambda p: p.stat().st_mtime)[-1]
    saved = dict(yaml.load((run_dir / "Pendulum-v1" / "config.yml").read_text(), Loader=yaml.UnsafeLoader))
    overridden = {item.split(":")[0] for item in tiny("mbpo")}  # --hyperparams wins over the trial, as in RL Zoo
    compared = [key for key in expected if key not in overridden]
    assert {"learning_rate", "real_ratio", "rollout_length"} <= set(compared)
    for key in compared:
        assert saved[key] == expected[key], (key, saved[key], expected[key])
