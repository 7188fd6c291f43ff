"""The few helpers compiled specs call besides torch itself.

Emitted modules copy the source of the helpers they use (so they run without ncd installed);
the in-process module calls these very functions, which is what makes the two bit-identical.
Every helper addresses *core* dims from the end: lifted dims lead and their number varies.
"""
from __future__ import annotations

import torch


def permute_core(x, perm):
    """Reorder the last len(perm) dims; leading (lifted) dims stay put."""
    lead = x.dim() - len(perm)
    return x.permute(*range(lead), *(lead + p for p in perm))


def tuple_of(*items):
    return tuple(items)


def step(x):
    return (x > 0).to(x.dtype)


def layer_norm(x, dims, eps):
    moved = torch.movedim(x, dims, tuple(range(-len(dims), 0)))
    out = torch.nn.functional.layer_norm(moved, moved.shape[-len(dims):], eps=eps)
    return torch.movedim(out, tuple(range(-len(dims), 0)), dims)


def rms_norm(x, dims, eps):
    moved = torch.movedim(x, dims, tuple(range(-len(dims), 0)))
    out = torch.nn.functional.rms_norm(moved, moved.shape[-len(dims):], eps=eps)
    return torch.movedim(out, tuple(range(-len(dims), 0)), dims)


def concat(parts, dim):
    """torch.cat after broadcasting every dim but ``dim`` (operands may lack lifted dims)."""
    rank = max(p.dim() for p in parts)
    parts = [p.reshape((1,) * (rank - p.dim()) + tuple(p.shape)) for p in parts]
    shapes = [list(p.shape) for p in parts]
    for shape in shapes:
        shape[dim] = 1
    common = list(torch.broadcast_shapes(*shapes))
    out = []
    for p in parts:
        common[dim] = p.shape[dim]
        out.append(p.expand(common))
    return torch.cat(out, dim=dim)


def arange(n, like):
    if like is None:
        return torch.arange(n, dtype=torch.float64)
    return torch.arange(n, dtype=like.dtype, device=like.device)


def init_tensor(dist, args, shape):
    """A parameter's first value, drawn from torch's default generator (seed it to reproduce)."""
    out = torch.empty(shape)
    if dist == "normal":
        return out.normal_(args[0], args[1])
    if dist == "trunc_normal":
        return torch.nn.init.trunc_normal_(out, args[0], args[1], args[0] - 2 * args[1], args[0] + 2 * args[1])
    if dist == "uniform":
        return out.uniform_(args[0], args[1])
    if dist == "zeros":
        return out.zero_()
    if dist == "ones":
        return out.fill_(1.0)
    if dist == "const":
        return out.fill_(args[0])
    raise ValueError(f"unknown initialiser {dist}")


def materialize(value, shape):
    """A contiguous tensor of exactly ``shape`` from a formula's value (broadcast, float)."""
    if not isinstance(value, torch.Tensor):
        return torch.full(shape, float(value), dtype=torch.float64)
    return torch.broadcast_to(value, shape).clone()


def expand_core(x, sizes):
    return x.expand(*x.shape[: x.dim() - len(sizes)], *sizes)


def new_full(like, sizes, value):
    return torch.full(tuple(sizes), value, dtype=like.dtype, device=like.device)


def chain(layers, x):
    for layer in layers:
        x = layer(x)
    return x


def stack_steps(outs, dim, reverse):
    if reverse:
        outs = outs[::-1]
    return torch.stack(outs, dim=dim)


def act_weights(p, halting, remainders, updates, threshold):
    """One step of adaptive computation time (Graves 2016; as used by Universal Transformers).

    Returns the weight of this step's state, the updated accumulators, and whether any
    position is still running.
    """
    if halting is None:
        halting = remainders = updates = torch.zeros_like(p)
    running = (halting < 1.0).to(p.dtype)
    reach = halting + p * running
    new_halted = (reach > threshold).to(p.dtype) * running
    running = (reach <= threshold).to(p.dtype) * running
    halting = halting + p * running
    remainders = remainders + new_halted * (1.0 - halting)
    halting = halting + new_halted * remainders
    updates = updates + running + new_halted
    weight = p * running + new_halted * remainders
    return weight, halting, remainders, updates, bool(running.any())


def act_mix(acc, new, weight):
    return new * weight + acc * (1.0 - weight)


def check_input(x, name, core, sizes):
    """Reject a wrongly shaped input with the axis names, before any op sees it."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"input {name} must be a tensor, got {type(x).__name__}")
    if x.dim() < len(core):
        raise ValueError(f"input {name} has {x.dim()} dims but its axes are [{', '.join(core)}]")
    tail = x.shape[x.dim() - len(core):]
    for axis, want, got in zip(core, sizes, tail):
        if want is not None and want != got:
            raise ValueError(f"input {name}: axis {axis} has size {got} but the spec binds it to {want}")
