"""Which names and operators an IR may carry, and which names emitted Python keeps for itself.

An IR (built here or read back from JSON) is data; its names end up as Python identifiers in the
emitted module and as attribute names of the torch modules. The verifier (ncd/verify.py) and the
emitter (backends/pytorch/emit.py) both hold every name to these rules, so a tampered IR cannot
turn a name into code.
"""
from __future__ import annotations

import builtins
import keyword
import re

SPEC_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*'*")  # grammar/ncd.lark's NAME: axes, params, blocks, taps
PY_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # ASCII only: no NFKC folding of look-alike letters
DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")

BINARY_OPS = frozenset({"+", "-", "*", "/", "**"})
COMPARE_OPS = frozenset({"<", "<=", ">", ">=", "==", "!="})
UNARY_OPS = frozenset({"-"})
CALL_ROOTS = frozenset({"torch", "F", "rt"})  # what a lowering's Call(fn="a.b") may start with

# Module-level names of an emitted file (besides its classes and the runtime helpers it copies).
MODULE_GLOBALS = frozenset({"types", "torch", "F", "nn", "math", "rt", "__all__"})
# Local names the emitted methods use for themselves.
EMITTED_LOCALS = frozenset({"self", "_", "act_weight", "running"})
# Suffixes of the helper variables a loop statement derives from its node id (`scan_5_steps0`).
HELPER_SUFFIX = re.compile(r"_(steps[0-9]+|acc[0-9]+|halting|remainders|updates)$")
SHADOWING = frozenset(dir(builtins)) | MODULE_GLOBALS | EMITTED_LOCALS
# torch.nn.Module's private attributes (torch 2.x): no param, buffer, instance or tap may take one.
# (The builder names implicit instances `_Block_0`, so a leading `_` alone is not reserved in an IR.)
MODULE_INTERNALS = frozenset("""_apply _backward_hooks _backward_pre_hooks _buffers _call_impl
    _compiled_call_impl _forward_hooks _forward_hooks_always_called _forward_hooks_with_kwargs
    _forward_pre_hooks _forward_pre_hooks_with_kwargs _get_backward_hooks _get_backward_pre_hooks _get_name
    _is_full_backward_hook _load_from_state_dict _load_state_dict_post_hooks _load_state_dict_pre_hooks
    _maybe_warn_non_full_backward_hook _modules _named_members _non_persistent_buffers_set _parameters
    _register_load_state_dict_pre_hook _register_state_dict_hook _replicate_for_data_parallel
    _save_to_state_dict _slow_forward _state_dict_hooks _state_dict_pre_hooks _version
    _wrapped_call_impl""".split())


def is_identifier(name: object) -> bool:
    """An ASCII Python identifier that is not a keyword (soft keywords such as `match` are fine)."""
    return isinstance(name, str) and PY_IDENT.fullmatch(name) is not None and not keyword.iskeyword(name)


def is_spec_name(name: object) -> bool:
    return isinstance(name, str) and SPEC_NAME.fullmatch(name) is not None


def value_id_problem(node_id: object) -> str | None:
    """Why a node id cannot be a local variable of emitted Python (None: it can)."""
    if not isinstance(node_id, str) or PY_IDENT.fullmatch(node_id) is None:
        return "is not an ASCII identifier ([A-Za-z_][A-Za-z0-9_]*)"
    if keyword.iskeyword(node_id):
        return "is a Python keyword"
    if node_id in SHADOWING:
        return "would shadow a name the emitted module uses (a builtin, torch, F, nn, rt, self, ...)"
    if HELPER_SUFFIX.search(node_id):
        return "ends like the emitter's own loop variables (_stepsN, _accN, _halting, _remainders, _updates)"
    return None
