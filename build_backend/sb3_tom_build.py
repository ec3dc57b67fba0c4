"""
In-tree PEP 517 build backend: setuptools' ``build_meta`` plus the files setuptools cannot place from setup.cfg.

``pyproject.toml`` selects it with ``build-backend = "sb3_tom_build"`` and ``backend-path = ["build_backend"]``.
Every hook is setuptools' own; ``build_wheel`` and ``build_editable`` then add to the wheel setuptools made:

* ``sb3_tom_zoo.pth``, ``sb3_tom_zoo.start`` and ``_sb3_tom_zoo_hook.py`` at the root of site-packages (both wheel
  kinds): the ``.pth`` line installs the lazy import hook that registers MBPO/MBPO_TOM with RL Zoo (see
  ``_sb3_tom_zoo_hook.py``). From Python 3.15 (PEP 829) the matching ``.start`` file, holding the entry point
  ``_sb3_tom_zoo_hook:install``, takes over and the ``.pth`` import line is skipped; from Python 3.18 import lines
  in ``.pth`` files are ignored, so only the ``.start`` file keeps the registration working. Older Pythons ignore
  ``.start`` files and use the ``.pth`` line;
* ``sb3_tom/hyperparams/*.yml`` copied from the top-level ``hyperparams/`` folder (regular wheels only; an
  editable install reads the source tree's ``hyperparams/`` directly, see ``sb3_tom.zoo.default_config_path``).

The wheel's ``RECORD`` is rewritten with the hashes and sizes of the added files, so pip installs and uninstalls
them like any other file of the distribution.
"""

import base64
import csv
import hashlib
import io
import os
import zipfile
from pathlib import Path

from setuptools import build_meta as _setuptools
from setuptools.build_meta import (  # noqa: F401  (PEP 517 hooks re-exported unchanged)
    build_sdist,
    get_requires_for_build_editable,
    get_requires_for_build_sdist,
    get_requires_for_build_wheel,
    prepare_metadata_for_build_editable,
    prepare_metadata_for_build_wheel,
)

HOOK_MODULE = "_sb3_tom_zoo_hook"
PTH_NAME = "sb3_tom_zoo.pth"
PTH_LINE = f"import {HOOK_MODULE}; {HOOK_MODULE}.install()\n"
START_NAME = "sb3_tom_zoo.start"  # PEP 829: same name as the .pth file, so that it replaces its import line
START_LINE = f"{HOOK_MODULE}:install\n"

_HERE = Path(__file__).resolve().parent


def _hook_files() -> dict[str, bytes]:
    return {
        f"{HOOK_MODULE}.py": (_HERE / f"{HOOK_MODULE}.py").read_bytes(),
        PTH_NAME: PTH_LINE.encode(),
        START_NAME: START_LINE.encode(),
    }


def _hyperparams_files() -> dict[str, bytes]:
    # PEP 517 runs the hooks from the root of the source tree (checkout or unpacked sdist)
    folder = Path("hyperparams")
    files = {f"sb3_tom/hyperparams/{path.name}": path.read_bytes() for path in sorted(folder.glob("*.yml"))}
    if not files:
        raise FileNotFoundError(f"No RL Zoo hyperparameter files found in {folder.resolve()}")
    return files


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _add_to_wheel(wheel_path: Path, extra: dict[str, bytes]) -> None:
    """Rewrite ``wheel_path`` with ``extra`` (archive name -> content) added before its ``.dist-info`` files."""
    with zipfile.ZipFile(wheel_path) as source:
        entries = [(info, source.read(info)) for info in source.infolist()]
    record_name = next(info.filename for info, _ in entries if info.filename.endswith(".dist-info/RECORD"))
    dist_info = record_name[: -len("RECORD")]
    record = next(data for info, data in entries if info.filename == record_name).decode()
    rows = [row for row in csv.reader(io.StringIO(record)) if row and row[0] not in extra and row[0] != record_name]
    date_time = next(info.date_time for info, _ in entries)

    tmp_path = wheel_path.with_name(wheel_path.name + ".tmp")
    with zipfile.ZipFile(tmp_path, "w", compression=zipfile.ZIP_DEFLATED) as target:
        added = False
        for info, data in entries:
            if info.filename == record_name or info.filename in extra:
                continue
            if not added and info.filename.startswith(dist_info):
                _write_extra(target, extra, date_time)
                added = True
            target.writestr(info, data)
        if not added:
            _write_extra(target, extra, date_time)
        rows += [[name, _record_hash(data), str(len(data))] for name, data in extra.items()]
        rows.append([record_name, "", ""])
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows(rows)
        record_info = zipfile.ZipInfo(record_name, date_time=date_time)
        record_info.external_attr = 0o644 << 16
        target.writestr(record_info, out.getvalue(), compress_type=zipfile.ZIP_DEFLATED)
    os.replace(tmp_path, wheel_path)


def _write_extra(target: zipfile.ZipFile, extra: dict[str, bytes], date_time: tuple[int, int, int, int, int, int]) -> None:
    for name, data in extra.items():
        info = zipfile.ZipInfo(name, date_time=date_time)
        info.external_attr = 0o644 << 16
        target.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    name = _setuptools.build_wheel(wheel_directory, config_settings, metadata_directory)
    _add_to_wheel(Path(wheel_directory) / name, {**_hyperparams_files(), **_hook_files()})
    return name


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    name = _setuptools.build_editable(wheel_directory, config_settings, metadata_directory)
    _add_to_wheel(Path(wheel_directory) / name, _hook_files())
    return name
