"""The limits that keep checking, costing, drawing and loading a hostile spec bounded.

A spec is data from anywhere: each size, count and allocation it asks for is compared with a
limit here before any work is done, and a refusal is an ``NcdError`` naming what and which limit.
docs/limits.md lists them; the memory limit is an option of ``ncd.load`` and ``ncd run``.
"""
from __future__ import annotations

import os
import re
import resource

# Sizes: size expressions are polynomials of a few axes (K = D / H, 4·Yq, E²).
MAX_SIZE_DEGREE = 64  # total degree in the axes: ((A^64)^64) is refused before sympy expands it
MAX_SIZE_TERMS = 64  # monomials a size expands to: (A+B+C)^64 has 2145, sympy's simplify takes minutes
MAX_SIZE_BITS = 1100  # bits of any number a size computes on the way (2^1100 > float64's largest)
MAX_SIZE_VALUE = 2**63 - 1  # a bound size, as torch's int64 shapes hold it
# A size read back from text (an IR JSON): generous next to what the two limits above let a spec
# write (64 terms of degree 64), small enough that parsing it is instant and never recursion-deep.
MAX_SIZE_TEXT = 20_000  # characters
MAX_SIZE_NODES = 5_000  # names, numbers and operators
MAX_SIZE_DEPTH = 200  # nesting (a sum of n terms nests n deep)
# An axis an op sizes after an earlier op read it as free re-builds the spec from the sizes found
# (ncd/frontend/builder.py build_sized); each build fixes at least one more axis, so real specs
# take two or three builds, and a chain longer than this is refused rather than built again.
MAX_SIZE_REBUILDS = 16

# Structure.
MAX_REPEAT = 4096  # `use l = B × N` and `repeat N { }`: beyond this it is a typo, not a model
MAX_CONST_LIST = 65_536  # numbers in one `const a[P] = [...]`: a table, not a data set
MAX_BLOCK_NESTING = 64  # blocks using blocks: the in-process module recurses once per level
MAX_BODY_NESTING = 64  # loop bodies inside loop bodies (repeat, scan, halting): the builder and the module recurse per level
MAX_EXPR_DEPTH = 128  # an expression's nesting (tanh(tanh(...)), a + b + ... chains): the builder recurses per level
# Imports (ncd/frontend/imports.py): a spec reads other spec files, so reading is bounded too.
MAX_IMPORT_DEPTH = 16  # files importing files
MAX_IMPORT_FILES = 64  # distinct files one check reads
MAX_IMPORT_CHARS = 4 << 20  # bytes of all imported files together (a spec is text, not data)

# Allocation at load and run time.
MEMORY_FRACTION = 0.5  # default memory limit: this fraction of what the process may use
ENV_MEMORY_LIMIT = "NCD_MEMORY_LIMIT"  # overrides the default, in the same syntax as --memory-limit


def default_memory_limit() -> int:
    """Bytes a load or run may allocate: ``NCD_MEMORY_LIMIT``, else half of the memory this process
    can get (physical memory, a cgroup's limit, an address-space rlimit: the smallest)."""
    env = os.environ.get(ENV_MEMORY_LIMIT)
    if env:
        return parse_bytes(env, ENV_MEMORY_LIMIT)
    candidates = [_physical_memory(), _cgroup_memory()]
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        candidates.append(max(soft - _address_space(), 0))
    known = [c for c in candidates if c]
    return int(min(known) * MEMORY_FRACTION) if known else 8 << 30


_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "t": 10**12, "tb": 10**12, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}


def parse_bytes(text: str | int, what: str = "a memory limit") -> int:
    """``"8GB"``, ``"512MiB"``, ``"1e9"`` or an int as a positive number of bytes."""
    from ncd.errors import NcdError

    if isinstance(text, int) and not isinstance(text, bool):
        value = float(text)
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d*)?(?:e\d{1,2})?)\s*([kmgt]i?b?|b)?\s*", str(text), re.IGNORECASE)
        if match is None:
            raise NcdError(f"{what} must be a number of bytes such as 8GB, 512MiB or 1e9, got {str(text)[:40]!r}")
        value = float(match[1]) * _UNITS[(match[2] or "").lower()]
    if not 1 <= value <= 2**63 - 1:
        raise NcdError(f"{what} must be between 1 byte and 2^63 - 1 bytes, got {str(text)[:40]}")
    return int(value)


def format_bytes(n: float) -> str:
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} B"


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def _cgroup_memory() -> int:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path, encoding="ascii") as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:
            return int(text)
    return 0


def _address_space() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
