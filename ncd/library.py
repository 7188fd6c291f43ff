"""The bundled spec library (specs/*.ncd, installed as package data of ncd.specs)."""
from __future__ import annotations

from importlib import resources
from pathlib import Path


def library_dir() -> Path:
    return Path(str(resources.files("ncd.specs")))


def library_specs() -> list[Path]:
    return sorted(library_dir().glob("*.ncd"))


def library_path(name: str) -> Path | None:
    path = library_dir() / f"{name}.ncd"
    return path if path.is_file() else None
