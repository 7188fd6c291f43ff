"""Analyses of a checked spec: what it costs (cost.py) and how long it takes on a GPU (timing.py: the roofline model)."""
from ncd.analysis.cost import CostReport, analyze
from ncd.analysis.timing import GPUS, roofline

__all__ = ["GPUS", "CostReport", "analyze", "roofline"]
