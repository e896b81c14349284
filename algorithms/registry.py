"""Registry of algorithms by name: version, description, kind and parameter schema.

Names match ``params.algorithm`` in the policy contract (``thompson_sampling``, ``ucb``,
``traffic_optimizer``) plus ``budget_arbitrage`` (action ``budget.reallocate``).

>>> validate_params("thompson_sampling", {"gamma": 0.9})["n_samples"]
10000
>>> create("ucb", {"variant": "ucb1"}).variant
'ucb1'
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from algorithms.base import AllocationAlgorithm, BudgetAlgorithm
from algorithms.budget_arbitrage import BudgetArbitrage
from algorithms.params import InvalidParameters, ParamSchema, ParamValue, to_json_schema, validate_against
from algorithms.thompson import ThompsonSampling
from algorithms.traffic_optimizer import TrafficOptimizer
from algorithms.ucb import UCBAllocation

__all__ = [
    "AlgorithmInfo",
    "InvalidParameters",
    "UnknownAlgorithm",
    "create",
    "get",
    "json_schema",
    "names",
    "validate_params",
]

Algorithm = AllocationAlgorithm | BudgetAlgorithm


class UnknownAlgorithm(KeyError):
    """Raised for a name that is not registered."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"unknown algorithm {name!r}; known: {', '.join(names())}")

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class AlgorithmInfo:
    """What the registry knows about one algorithm."""

    name: str
    version: str
    description: str
    kind: Literal["allocation", "budget"]
    params: ParamSchema
    factory: Callable[[Mapping[str, object] | None], Algorithm]

    def defaults(self) -> dict[str, ParamValue]:
        """Default value of every parameter."""
        return {k: spec.get("default") for k, spec in self.params.items()}

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description (without the factory)."""
        return {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "kind": self.kind,
            "params": copy.deepcopy(self.params),
        }


_REGISTRY: dict[str, AlgorithmInfo] = {
    ThompsonSampling.NAME: AlgorithmInfo(
        ThompsonSampling.NAME,
        ThompsonSampling.VERSION,
        ThompsonSampling.DESCRIPTION,
        "allocation",
        ThompsonSampling.PARAMS,
        ThompsonSampling.from_params,
    ),
    UCBAllocation.NAME: AlgorithmInfo(
        UCBAllocation.NAME,
        UCBAllocation.VERSION,
        UCBAllocation.DESCRIPTION,
        "allocation",
        UCBAllocation.PARAMS,
        UCBAllocation.from_params,
    ),
    TrafficOptimizer.NAME: AlgorithmInfo(
        TrafficOptimizer.NAME,
        TrafficOptimizer.VERSION,
        TrafficOptimizer.DESCRIPTION,
        "allocation",
        TrafficOptimizer.PARAMS,
        TrafficOptimizer.from_params,
    ),
    BudgetArbitrage.NAME: AlgorithmInfo(
        BudgetArbitrage.NAME,
        BudgetArbitrage.VERSION,
        BudgetArbitrage.DESCRIPTION,
        "budget",
        BudgetArbitrage.PARAMS,
        BudgetArbitrage.from_params,
    ),
}


def names() -> list[str]:
    """Registered algorithm names, sorted."""
    return sorted(_REGISTRY)


def get(name: str) -> AlgorithmInfo:
    """Info for ``name``; raises :class:`UnknownAlgorithm`. The schema is a copy: edit freely."""
    try:
        info = _REGISTRY[name]
    except (KeyError, TypeError):
        raise UnknownAlgorithm(str(name)) from None
    return AlgorithmInfo(info.name, info.version, info.description, info.kind, copy.deepcopy(info.params), info.factory)


def validate_params(name: str, params: Mapping[str, object] | None) -> dict[str, ParamValue]:
    """Validated parameters with defaults filled in; raises :class:`InvalidParameters` per field."""
    info = _REGISTRY.get(name)
    if info is None:
        raise UnknownAlgorithm(name)
    return validate_against(info.params, params, name)


def create(name: str, params: Mapping[str, object] | None = None) -> Algorithm:
    """A configured algorithm instance (parameters validated first)."""
    info = _REGISTRY.get(name)
    if info is None:
        raise UnknownAlgorithm(name)
    return info.factory(params)


def json_schema(name: str) -> dict[str, Any]:
    """A standard JSON Schema object for ``name``'s parameters."""
    return to_json_schema(get(name).params, title=f"{name} parameters")
