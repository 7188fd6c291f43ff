"""Weight mappings (filled in by the spec family's owner)."""
from __future__ import annotations

HANDLERS: dict = {}
