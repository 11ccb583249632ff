"""Assemble pruned causal LMs from pre-sliced weights: Týr's level database for LLMs.

Importance is scored once (:func:`autoprune.llm.importance.unit_orders`), so the kept
indices of every group at every level are known up front, and a group's sliced weights
depend on its own level only. :class:`LMLevelDatabase` therefore slices each group's
weights at each level the first time that level is asked for and keeps them, the least
recently used going first once they hold ``max_bytes`` (every level of every group
would be several times the model: a search spends most of its time near a few levels
per group, so those stay); a
candidate is then a structure-only copy of the dense model (no tensor copied), its
removed sub-blocks replaced, and each parameter set to a copy of its cached slice (or of
the dense tensor where no group prunes it). Copies, not views, because an evaluator
retrains the assembled model in place.

The result equals :func:`autoprune.llm.prune.prune` exactly (same slices, same shape
fixes); ``tests/llm`` holds the two to each other.
"""

from __future__ import annotations

import copy
import logging
from collections import OrderedDict

import numpy as np
import torch
from torch import nn

from autoprune.llm.importance import UnitOrder, unit_orders
from autoprune.llm.prune import fix_shapes, group_slices, keep_indices_at, remove_sub_block
from autoprune.llm.structure import find_structure
from autoprune.space.search_space import SearchSpace

logger = logging.getLogger(__name__)


class LMLevelDatabase:
    """Kept indices and sliced weights of every group at every level of a dense causal LM."""

    def __init__(self, *, dense: nn.Module, space: SearchSpace, orders: dict[str, UnitOrder],
                 max_bytes: int | None = None) -> None:
        """``max_bytes``: memory for cached slices; None: as much as the dense model's parameters."""
        missing = sorted(set(space.group_names) - set(orders))
        if missing:
            raise ValueError(f"no importance order for groups {missing[:3]}")
        self.dense = dense.eval()
        self.space = space
        self.orders = orders
        self.structure = find_structure(dense)
        self._params = dict(dense.named_parameters(remove_duplicate=False))
        self._sliced: OrderedDict[tuple[str, int], dict[str, torch.Tensor]] = OrderedDict()
        self.max_bytes = (sum(p.nbytes for p in dense.parameters()) if max_bytes is None else int(max_bytes))
        self.cached_bytes = 0

    @classmethod
    def build(cls, dense: nn.Module, space: SearchSpace, *, importance: str = "magnitude",
              calibration: torch.Tensor | None = None, max_bytes: int | None = None) -> "LMLevelDatabase":
        """Score ``dense`` once with ``importance`` (see :mod:`autoprune.llm.importance`)."""
        orders = unit_orders(dense, find_structure(dense), space, importance=importance, calibration=calibration)
        return cls(dense=dense, space=space, orders=orders, max_bytes=max_bytes)

    def keep_indices(self, levels: np.ndarray) -> dict[str, list[int]]:
        """Kept indices of every group not at its full size."""
        return keep_indices_at(self.space, self.orders, levels)

    def assemble(self, levels: np.ndarray) -> tuple[nn.Module, dict[str, list[int]]]:
        """A pruned copy of the dense model at ``levels``, and its kept indices."""
        levels = self.space.check(levels)
        keep = self.keep_indices(levels)
        placeholders = {id(p): nn.Parameter(torch.empty(0, dtype=p.dtype), requires_grad=p.requires_grad)
                        for p in self._params.values()}
        model = copy.deepcopy(self.dense, memo=placeholders)  # structure only; tensors are set below
        sliced: dict[str, torch.Tensor] = {}
        for group, level in zip(self.space.groups, levels):
            if group.name not in keep:
                continue
            if keep[group.name]:
                sliced.update(self._slices(group.name, int(level), keep[group.name]))
            else:
                remove_sub_block(self.structure, model, group.name)
        made: dict[int, nn.Parameter] = {}
        with torch.no_grad():
            for name, placeholder in list(model.named_parameters(remove_duplicate=False)):
                new = made.get(id(placeholder))
                if new is None:
                    source = sliced.get(name)
                    value = source.clone() if source is not None else self._params[name].detach().clone()
                    new = made[id(placeholder)] = nn.Parameter(value, requires_grad=placeholder.requires_grad)
                module_name, _, attr = name.rpartition(".")
                model.get_submodule(module_name)._parameters[attr] = new
        for name, kept in keep.items():
            if kept:
                fix_shapes(self.structure, model, name)
        return model.eval(), keep

    def _slices(self, group: str, level: int, kept: list[int]) -> dict[str, torch.Tensor]:
        key = (group, level)
        cached = self._sliced.get(key)
        if cached is not None:
            self._sliced.move_to_end(key)
            return cached
        with torch.no_grad():
            cached = {piece.name: self._params[piece.name].detach().index_select(piece.dim, piece.index)
                      for piece in group_slices(self.structure, group, kept)}
        size = sum(t.nbytes for t in cached.values())
        if size > self.max_bytes:
            return cached  # never kept: it would only push out what fits
        while self.cached_bytes + size > self.max_bytes:
            _, dropped = self._sliced.popitem(last=False)
            self.cached_bytes -= sum(t.nbytes for t in dropped.values())
        self._sliced[key] = cached
        self.cached_bytes += size
        return cached
