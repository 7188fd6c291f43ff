"""Import the package as `ncd.backends.pararnn`, or from the repo root before that mapping exists."""
import sys
from pathlib import Path

try:
    import ncd.backends.pararnn as P  # noqa: F401
except ImportError:  # editable install without the ncd.backends mapping
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    import backends.pararnn as P  # noqa: F401
