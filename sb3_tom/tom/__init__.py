from sb3_tom.tom.mbpo_tom import MBPO_TOM

__all__ = ["MBPO_TOM"]
