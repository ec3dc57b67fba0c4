"""Checks of the package as a whole: declared dependencies, tunables, and what the fast test set leaves out."""

import ast
import configparser
import importlib.metadata
import inspect
import re
import sys
from pathlib import Path

import pytest
import torch as th

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "sb3_tom"


def imported_top_level_modules() -> set[str]:
    modules = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return modules - set(sys.stdlib_module_names) - {"sb3_tom"}


def test_every_imported_distribution_is_declared():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    lines = [line.strip() for line in config["options"]["install_requires"].splitlines()]
    declared = {re.split(r"[\[<>=!~; ]", line)[0].lower().replace("_", "-") for line in lines if line and line[0] != "#"}
    providers = importlib.metadata.packages_distributions()
    for module in sorted(imported_top_level_modules()):
        distributions = {name.lower().replace("_", "-") for name in providers.get(module, [module])}
        assert distributions & declared, f"sb3_tom imports {module} (from {distributions}) but setup.cfg does not declare it"


def test_tunables_live_in_one_module():
    """Chunk sizes and kernel thresholds are defined in sb3_tom/tuning.py only."""
    pattern = re.compile(r"^[A-Z_]*(CHUNK|ROWS|COLUMNS|MIN_FEATURES)[A-Z_]* = ", re.MULTILINE)
    for path in PACKAGE.rglob("*.py"):
        if path.name != "tuning.py":
            assert not pattern.search(path.read_text()), path


def test_trainer_keeps_no_data_sized_state_between_rounds():
    from sb3_tom.dynamics.ensemble import GaussianEnsemble
    from sb3_tom.dynamics.training import EnsembleTrainer

    n = 3000
    trainer = EnsembleTrainer(GaussianEnsemble(2, 1, ensemble_size=3, num_elites=2, hidden_sizes=(8,)), max_epochs=1)
    trainer.fit(th.randn(n, 2), th.randn(n, 1), th.randn(n), th.randn(n, 2))
    for name, value in vars(trainer).items():
        assert not (isinstance(value, th.Tensor) and value.numel() >= n), name


def test_tests_that_install_the_package_are_marked_slow():
    """The fast set (-m "not slow") builds and installs nothing: every test using the `installed` fixture is slow."""
    sys.path.insert(0, str(ROOT / "tests"))
    import test_zoo

    for name, function in vars(test_zoo).items():
        if name.startswith("test_") and "installed" in inspect.signature(function).parameters:
            marks = {mark.name for mark in getattr(function, "pytestmark", [])}
            assert "slow" in marks, name


@pytest.mark.parametrize("module", ["sb3_tom.tuning"])
def test_tunables_are_documented(module):
    import importlib

    source = inspect.getsource(importlib.import_module(module))
    for name in re.findall(r"^([A-Z_]+) = ", source, re.MULTILINE):
        assert re.search(rf"#: .*\n(#: .*\n)*{name} = ", source), f"{name} has no #: comment"
