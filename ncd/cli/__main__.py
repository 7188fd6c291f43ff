"""`python -m ncd.cli ...`, the same as the `ncd` console script."""
import sys

from ncd.cli import main

sys.exit(main())
