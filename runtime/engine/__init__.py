"""Continuous batching: many sequences share each graph run (see engine.py)."""

from .engine import Engine
from .scheduler import QueueFull
from .sequence import Sequence, Status

__all__ = ["Engine", "QueueFull", "Sequence", "Status"]
