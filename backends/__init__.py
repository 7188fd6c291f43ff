"""The lowering targets, installed as the package `ncd.backends` (setup.py maps this folder).

Every module here imports its siblings as `ncd.backends....`; imported as a top-level `backends`
(the repository root on sys.path, no install) they would load twice under two names, so that
is refused with the fix.
"""
if __name__ != "ncd.backends":
    raise ImportError(f"backends/ is the package ncd.backends, not {__name__!r}: install the repository "
                      f"(`pip install -e .`, setup.py maps the folder) and import ncd.backends")
