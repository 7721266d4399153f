"""The training engine (our loop over Lightning Fabric)."""
from segkd.engine.loop import Engine, NonFiniteLoss

__all__ = ["Engine", "NonFiniteLoss"]
