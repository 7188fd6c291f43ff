"""Per-call decisions remembered by what they depend on.

`auto`'s run-time choice of a scan's backend (module.py: the loop where it is predicted cheaper
than Newton) depends only on the sizes, dtypes and devices of the values the scan reads and on
whether the call records a graph, yet asking the cost model means building the initial states
and walking the shapes at every call: at small sizes a visible share of the call. A ``CallMemo``
asks once per such key and answers from memory afterwards (bounded; cleared when full).
Under torch.compile or export the sizes may be symbolic, so nothing is remembered there.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import torch

T = TypeVar("T")
_ENTRIES = 256  # distinct keys remembered per memo (a module called at many sizes starts over)


def _describe(value: Any) -> Any:
    """What of a value a decision may depend on: a tensor's shape, dtype and device, a number
    itself, a tuple or list item by item, anything else its type."""
    if isinstance(value, torch.Tensor):
        return tuple(value.shape), value.dtype, value.device
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (tuple, list)):
        return tuple(_describe(v) for v in value)
    return type(value)


class CallMemo:
    """A decision per key: the described values a caller passes (see ``_describe``)."""

    def __init__(self) -> None:
        self._seen: dict[tuple, Any] = {}

    def get(self, values: Iterable[Any], decide: Callable[[], T]) -> T:
        """``decide()``'s answer for the key ``values`` describe, asked at the key's first call only."""
        if torch.compiler.is_compiling() or torch.compiler.is_exporting():
            return decide()
        key = tuple(_describe(v) for v in values)
        try:
            return self._seen[key]
        except KeyError:
            pass
        answer = decide()
        if len(self._seen) >= _ENTRIES:
            self._seen.clear()
        self._seen[key] = answer
        return answer
