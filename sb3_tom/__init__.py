"""sb3_tom: model-based reinforcement learning (MBPO, TOM) for Stable-Baselines3."""

from sb3_tom.mbpo import MBPO
from sb3_tom.tom import MBPO_TOM
from sb3_tom.version import __version__

__all__ = ["MBPO", "MBPO_TOM", "__version__"]
