"""ncd: Neural-Circuit-Diagram specs compiled to PyTorch modules, diagrams and cost reports."""
from ncd.api import check, load
from ncd.errors import NcdError

__all__ = ["NcdError", "check", "load"]
__version__ = "0.1.0"
