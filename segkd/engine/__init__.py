"""The training engine (our loop over Lightning Fabric)."""
from .loop import Engine, NonFiniteLoss

__all__ = ["Engine", "NonFiniteLoss"]
