"""Port trained torch.nn weights into compiled specs: ``load_torch(compiled, reference)``.

Each family module (attention, recurrent, norm) declares ``HANDLERS``: torch.nn module type → a function
that copies the reference's weights into the compiled module, raising NcdError on any mismatch.
"""
from __future__ import annotations

from torch import nn

from ncd.errors import NcdError
from ncd.interop import attention, norm, recurrent

_HANDLERS = {**attention.HANDLERS, **recurrent.HANDLERS, **norm.HANDLERS}


def load_torch(compiled: nn.Module, reference: nn.Module) -> nn.Module:
    """Copy ``reference``'s weights into ``compiled`` (in place) and return ``compiled``."""
    for kind in type(reference).__mro__:
        handler = _HANDLERS.get(kind)
        if handler is not None:
            handler(compiled, reference)
            return compiled
    supported = ", ".join(sorted(t.__name__ for t in _HANDLERS))
    raise NcdError(f"no weight mapping for {type(reference).__name__}", hint=f"supported: {supported}")


__all__ = ["load_torch"]
