"""The example scripts run end to end (tiny budgets) in subprocesses."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, cwd: Path) -> str:
    result = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow
def test_train_script_saves_agent_curve_and_resumes(tmp_path):
    script = str(ROOT / "examples" / "train.py")
    common = ["--algo", "mbpo", "--env", "Pendulum-v1", "--eval-freq", "100", "--checkpoint-freq", "100"]
    run(script, *common, "--steps", "250", "--log-dir", str(tmp_path), cwd=tmp_path)
    run_dir = tmp_path / "mbpo_Pendulum-v1_seed0"
    for name in ["agent.zip", "replay_buffer.pkl", "learning_curve.png", "evaluations.npz", "monitor.csv"]:
        assert (run_dir / name).exists(), name
    assert (run_dir / "checkpoints" / "agent_200_steps.zip").exists()
    out = run(script, *common, "--steps", "350", "--log-dir", str(tmp_path), "--resume", cwd=tmp_path)
    assert "Resuming from" in out and "agent_200_steps.zip" in out
    assert (run_dir / "checkpoints" / "agent_300_steps.zip").exists()


@pytest.mark.slow
def test_plot_weights_script(tmp_path):
    out = tmp_path / "weights.png"
    stdout = run(str(ROOT / "examples" / "plot_weights.py"), "--fast", "--steps", "1300", "--out", str(out), cwd=tmp_path)
    assert out.exists() and out.stat().st_size > 10_000
    assert "chunk means" in stdout


@pytest.mark.parametrize(
    "env_id, expected",
    [
        ("HalfCheetah-v4", {"gradient_steps": 40, "rollout_length": [20, 150, 1, 1], "target_entropy": -3}),
        ("Hopper-v4", {"gradient_steps": 20, "rollout_length": [20, 150, 1, 15], "target_entropy": -1}),
    ],
)
def test_train_script_uses_the_shipped_per_env_hyperparameters(tmp_path, env_id, expected):
    from sb3_tom import MBPO_TOM

    args = ["--env", env_id, "--steps", "0", "--threads", "1", "--log-dir", str(tmp_path)]
    out = run(str(ROOT / "examples" / "train.py"), *args, cwd=tmp_path)
    assert f"Hyperparameters from hyperparams/mbpo_tom.yml, {env_id}" in out and "; 1 torch thread(s)" in out
    model = MBPO_TOM.load(tmp_path / f"mbpo_tom_{env_id}_seed0" / "agent.zip")
    for key, value in expected.items():
        assert getattr(model, key) == value, key
