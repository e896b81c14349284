"""Traffic-allocation and budget algorithms for SmartLinks Autopilot.

Pure Python + numpy: no web framework or database imports. Algorithms only *propose*
(:class:`~algorithms.base.AllocationProposal`, :class:`~algorithms.base.BudgetProposal`); the
server decides, through its policy check, whether a proposal is executed. The click path uses
:class:`~algorithms.base.AliasSampler` to route each click by sampling the approved allocation.
"""

from algorithms.base import (
    AliasSampler,
    AllocationAlgorithm,
    AllocationProposal,
    ArmStats,
    BudgetAlgorithm,
    BudgetProposal,
)
from algorithms.budget_arbitrage import BudgetArbitrage, CampaignStats
from algorithms.params import InvalidParameters
from algorithms.registry import UnknownAlgorithm, create, get, names, validate_params
from algorithms.thompson import ThompsonPolicy, ThompsonSampling
from algorithms.traffic_optimizer import TrafficOptimizer
from algorithms.ucb import KLUCBPolicy, UCB1Policy, UCBAllocation

__all__ = [
    "AliasSampler",
    "AllocationAlgorithm",
    "AllocationProposal",
    "ArmStats",
    "BudgetAlgorithm",
    "BudgetArbitrage",
    "BudgetProposal",
    "CampaignStats",
    "InvalidParameters",
    "KLUCBPolicy",
    "ThompsonPolicy",
    "ThompsonSampling",
    "TrafficOptimizer",
    "UCB1Policy",
    "UCBAllocation",
    "UnknownAlgorithm",
    "create",
    "get",
    "names",
    "validate_params",
]
