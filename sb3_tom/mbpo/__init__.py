from sb3_tom.mbpo.mbpo import MBPO

__all__ = ["MBPO"]
