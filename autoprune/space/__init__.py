"""Search spaces: groups, keep levels and the exact cost model (numpy-only core)."""

from autoprune.space.levels import LevelGrid
from autoprune.space.search_space import RESOURCES, Group, SearchSpace

__all__ = ["RESOURCES", "Group", "LevelGrid", "SearchSpace"]
