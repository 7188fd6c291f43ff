"""ncd: Neural-Circuit-Diagram specs compiled to PyTorch modules, diagrams and cost reports."""
try:
    import ncd.backends  # noqa: F401  (setup.py maps the repository's backends/ folder here)
except ModuleNotFoundError as err:  # an install without that mapping: say how to fix it
    if err.name != "ncd.backends":
        raise
    raise ImportError("ncd.backends is missing from this install (setup.py maps the repository's backends/ "
                      "folder to it); reinstall from the repository root with `pip install -e .`") from None

from ncd.api import check, load  # noqa: E402
from ncd.errors import NcdError
from ncd.hub import load_pretrained, save

__all__ = ["NcdError", "check", "load", "load_pretrained", "save"]
__version__ = "0.1.0"
