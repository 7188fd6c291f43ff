"""ncd: Neural-Circuit-Diagram specs compiled to PyTorch modules, diagrams and cost reports."""
from ncd.api import check, load
from ncd.errors import NcdError
from ncd.hub import load_pretrained, save

__all__ = ["NcdError", "check", "load", "load_pretrained", "save"]
__version__ = "0.1.0"
