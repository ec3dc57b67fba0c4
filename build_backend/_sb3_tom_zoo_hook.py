"""
Registers sb3_tom's algorithms with RL Zoo (``rl_zoo3``), which has no plugin mechanism.

The build backend (``build_backend/sb3_tom_build.py``) installs this module at the top level of site-packages,
next to ``sb3_tom_zoo.pth``, whose single line ``import _sb3_tom_zoo_hook; _sb3_tom_zoo_hook.install()`` runs
at interpreter start-up. ``install()`` only puts a small finder at the front of ``sys.meta_path``: it imports
nothing (no torch, SB3, numpy or sb3_tom), so unrelated Python programs pay a few microseconds.

When ``rl_zoo3.utils``, ``rl_zoo3.hyperparams_opt`` or ``rl_zoo3.exp_manager`` is imported, the finder lets the
normal import machinery find and execute the module, then hands it to :func:`sb3_tom.zoo.patch_module`, which
adds ``mbpo``/``mbpo_tom`` to ``ALGOS``, their Optuna samplers, and their packaged default hyperparameter files.
A failure there is reported as a warning and never breaks RL Zoo for other algorithms.

This module has to stay importable on its own: standard library only, nothing imported at module level but ``sys``
(``typing`` is not loaded at start-up: annotations here use builtins only).
"""

import sys

#: Modules patched by :func:`sb3_tom.zoo.patch_module` right after they have executed.
PATCHED_MODULES = frozenset({"rl_zoo3.utils", "rl_zoo3.hyperparams_opt", "rl_zoo3.exp_manager"})

# Names being looked up by the finder below (the import system holds each module's lock meanwhile).
_busy: set = set()


_warned = False


def _patch(module) -> None:
    global _warned
    try:
        from sb3_tom.zoo import patch_module

        patch_module(module)
    except Exception as exc:
        if not _warned:  # once per process, not once per RL Zoo module
            _warned = True
            import warnings

            warnings.warn(f"sb3_tom could not register its algorithms with RL Zoo: {exc!r}", stacklevel=2)


class _PatchingLoader:
    """Delegates to the real loader, then patches the freshly executed module."""

    def __init__(self, loader) -> None:
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        _patch(module)

    def __getattr__(self, name: str):
        # get_source, get_code, get_resource_reader, ... (used by linecache, inspect, importlib.resources)
        return getattr(self._loader, name)


class ZooImportHook:
    """``sys.meta_path`` finder that only reacts to the RL Zoo modules listed in :data:`PATCHED_MODULES`."""

    sb3_tom_zoo_hook = True

    def find_spec(self, fullname: str, path=None, target=None):
        if fullname not in PATCHED_MODULES:
            return None
        if fullname in _busy:  # another delegating finder asked us again
            return None
        _busy.add(fullname)
        try:
            spec = None
            for finder in list(sys.meta_path):
                if getattr(finder, "sb3_tom_zoo_hook", False):
                    continue
                find_spec = getattr(finder, "find_spec", None)
                if find_spec is None:
                    continue
                spec = find_spec(fullname, path, target)
                if spec is not None:
                    break
        finally:
            _busy.discard(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return None
        if not isinstance(spec.loader, _PatchingLoader):
            spec.loader = _PatchingLoader(spec.loader)
        return spec


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (once) and patch RL Zoo modules that are already imported."""
    if not any(getattr(finder, "sb3_tom_zoo_hook", False) for finder in sys.meta_path):
        sys.meta_path.insert(0, ZooImportHook())
    for name in sorted(PATCHED_MODULES):
        module = sys.modules.get(name)
        if module is not None:
            _patch(module)
