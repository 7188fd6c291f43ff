"""The ParaRNN package as the tests import it: `ncd.backends.pararnn`."""
import ncd.backends.pararnn as P  # noqa: F401
