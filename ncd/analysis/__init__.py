"""Analyses of a checked spec: what it costs (cost.py) and how long it takes on a GPU (roofline.py)."""
from ncd.analysis.cost import CostReport, analyze
from ncd.analysis.roofline import GPUS, roofline

__all__ = ["GPUS", "CostReport", "analyze", "roofline"]
