"""`python -m ncd.cli ...`, the same as the `ncd` console script (importing this module runs nothing)."""
import sys

from ncd.cli import main

if __name__ == "__main__":
    sys.exit(main())
