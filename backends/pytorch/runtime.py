"""The few helpers compiled specs call besides torch itself.

Emitted modules copy the source of the helpers they use (so they run without ncd installed);
the in-process module calls these very functions, which is what makes the two bit-identical.
Every helper addresses *core* dims from the end: lifted dims lead and their number varies.
"""
from __future__ import annotations

import torch


class InputError(ValueError):
    """A call's inputs do not fit the spec (a shape, a window, an id out of range): the module
    reports it as a located NcdError. Any other exception from a run is a bug and surfaces as itself."""

    def __init__(self, message, hint=None):
        super().__init__(message)
        self.hint = hint
        self.span = None  # the statement that raised it, set where it is run (module.py)


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


def values(items, like):
    """`const a[P] = [...]`: the listed numbers as a tensor (float64 for constants, as arange)."""
    if like is None:
        return torch.tensor(items, dtype=torch.float64)
    return torch.tensor(items, dtype=like.dtype, device=like.device)


def materialize(value, shape):
    """A contiguous tensor of exactly ``shape`` from a formula's value (broadcast, float)."""
    if not isinstance(value, torch.Tensor):
        return torch.full(shape, float(value), dtype=torch.float64)
    return torch.broadcast_to(value, shape).clone()


def materialize_at(value, shape, anchor):
    """A const's value computed in forward (its axis is free): ``shape``, the anchor's float dtype."""
    like = anchor if isinstance(anchor, torch.Tensor) else None
    if not isinstance(value, torch.Tensor):
        return torch.full(shape, float(value), dtype=like.dtype if like is not None else None,
                          device=like.device if like is not None else None)
    if value.is_floating_point() and like is not None:
        value = value.to(like.dtype)
    return torch.broadcast_to(value, shape)


def expand_core(x, sizes):
    return x.expand(*x.shape[: x.dim() - len(sizes)], *sizes)


def new_full(like, sizes, value):
    """A tensor of one number in ``like``'s dtype; a number past that dtype's range becomes ±inf,
    as a cast rounds it (torch.full refuses it instead)."""
    if value and like.dtype.is_floating_point and torch.finfo(like.dtype).max < abs(value) < float("inf"):
        value = float("inf") if value > 0 else -float("inf")
    return torch.full(tuple(sizes), value, dtype=like.dtype, device=like.device)


def chain(layers, x):
    for layer in layers:
        x = layer(x)
    return x


def call_lifted(block, repeat, grow, port_ranks, *args):
    """A call whose callee computes some outputs (``grow``) from its parameters alone: those get the
    lifted dims the inputs lead with (broadcast, no copy), as the IR types them."""
    out = chain(block, *args) if repeat else block(*args)
    lead = torch.broadcast_shapes(*(a.shape[:a.dim() - r] for a, r in zip(args, port_ranks)))
    outs = out if isinstance(out, tuple) else (out,)
    outs = tuple(o.expand(lead + o.shape) if g else o for o, g in zip(outs, grow))
    return outs if isinstance(out, tuple) else outs[0]


def chain_states(layers, k, x, *states):
    """A step module's repeated layers: each takes x and its own k states, gives x and k new ones."""
    new = []
    for i, layer in enumerate(layers):
        x, *mine = layer(x, *states[i * k:(i + 1) * k])
        new.extend(mine)
    return (x, *new)


def stack_steps(outs, dim, reverse):
    # A step's value may not yet carry the caller's lifted dims (an emit that reads only the
    # initial carry at step 0): broadcast them, leading dims, before stacking at dim < 0.
    if reverse:
        outs = outs[::-1]
    return torch.stack(torch.broadcast_tensors(*outs), dim=dim)


def act_weights(p, halting, remainders, updates, threshold, last=False):
    """One step of ACT as tensor2tensor's Universal Transformer computes it (``mix interpolate``).

    A position halts once its accumulated probability would exceed ``threshold``; one still running
    at the last step gets no remainder (``last`` is ignored, as tensor2tensor does). Returns the weight
    of this step's state, the updated accumulators, and whether any position is still running.
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
    """tensor2tensor's state interpolation acc ← s·w + acc·(1 − w) (``mix interpolate``)."""
    return new * weight + acc * (1.0 - weight)


def act_weights_graves(p, halting, remainders, updates, threshold, last=False):
    """One step of ACT as Graves (2016) defines it (``mix graves``).

    A position halts at the first step N whose cumulative probability reaches ``threshold`` (= 1 − ε),
    or at the last step; it is then given the remainder R = 1 − Σ_{n<N} pₙ instead of p_N, so its
    weights sum to 1, and its ponder cost is N + R (``updates`` counts N). ``remainders`` is 0 exactly
    while a position runs (R > ε > 0 once it halts), which is what marks it running.
    """
    if halting is None:
        halting = remainders = updates = torch.zeros_like(p)
    running = (remainders == 0).to(p.dtype)
    stop = running if last else ((halting + p) >= threshold).to(p.dtype) * running
    going = running - stop
    remainder = stop * (1.0 - halting)
    weight = p * going + remainder
    return weight, halting + weight, remainders + remainder, updates + running, bool(going.any())


def act_sum(acc, new, weight):
    """Graves' output Σ pₙ·sₙ, one term per step (``mix graves``)."""
    return acc + new * weight


def check_input(x, name, core, sizes, kind="float"):
    """Reject a wrongly shaped or typed input with the axis names, before any op sees it.

    ``kind`` is the wire's dtype in the IR: float (any floating dtype), int or bool. Runs at every
    call: the messages are only formatted when one is raised."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"input {name} must be a tensor, got {type(x).__name__}")
    if kind == "float" and not x.is_floating_point():
        raise TypeError(f"input {name} [{', '.join(core)}] must be a floating-point tensor, "
                        f"got {x.dtype} of shape {tuple(x.shape)}")
    if kind == "int" and (x.is_floating_point() or x.is_complex() or x.dtype == torch.bool):
        raise TypeError(f"input {name} [{', '.join(core)}] must be an integer tensor, "
                        f"got {x.dtype} of shape {tuple(x.shape)}")
    if kind == "bool" and x.dtype != torch.bool:
        raise TypeError(f"input {name} [{', '.join(core)}] must be a boolean tensor, "
                        f"got {x.dtype} of shape {tuple(x.shape)}")
    if x.dim() < len(core):
        raise InputError(f"input {name} has {x.dim()} dims but its axes are [{', '.join(core)}]: "
                         f"got {x.dtype} of shape {tuple(x.shape)}")
    tail = x.shape[x.dim() - len(core):]
    for axis, want, size in zip(core, sizes, tail):
        if want is not None and want != size:
            raise InputError(f"input {name}: axis {axis} has size {size} but the spec binds it to {want} "
                             f"(axes [..., {', '.join(core)}], got {x.dtype} of shape {tuple(x.shape)})")


def _conv_operands(x, w, n_in, n_out, n_sp):
    """x [..., *c_in, *spatial] and w [*c_out, *c_in, *kernel] as torch's conv layouts:
    (leading dims, c_out shape, x [N, C_in, *spatial], w [C_out, C_in, *kernel])."""
    if w.dim() != n_out + n_in + n_sp:
        raise InputError(f"conv weights have {w.dim()} dims but {n_out + n_in + n_sp} axes: they cannot be lifted")
    lead = tuple(x.shape[: x.dim() - n_in - n_sp])
    c_in = 1
    for s in x.shape[x.dim() - n_in - n_sp : x.dim() - n_sp]:
        c_in *= s
    c_out_shape = tuple(w.shape[:n_out])
    c_out = 1
    for s in c_out_shape:
        c_out *= s
    xb = x.reshape((-1, c_in) + tuple(x.shape[x.dim() - n_sp :]))
    wk = w.reshape((c_out, c_in) + tuple(w.shape[n_out + n_in :]))
    return lead, c_out_shape, xb, wk


def _each(value, n):
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * n


def check_window(x, n_sp, window, stride, padding, dilation, ceil_mode=False):
    """A sliding window must fit its (padded) input: an input whose free spatial axis is too small
    for the kernel is refused by name (an InputError the module reports as a located error).
    With ``ceil_mode`` (pools) a last window may run past the end, as in torch, so the output is
    empty only when ``ceil((n + 2p - d(k-1) - 1) / s) + 1 < 1``.
    Each option is one int for every spatial dim or a tuple of one each."""
    window, padding, dilation = _each(window, n_sp), _each(padding, n_sp), _each(dilation, n_sp)
    strides = _each(stride if stride is not None else window, n_sp)
    for i, (n, k, p, d, s) in enumerate(zip(x.shape[x.dim() - n_sp :], window, padding, dilation, strides)):
        slack = s - 1 if ceil_mode else 0  # ceil rounds a partial last window up
        if n + 2 * p + slack < d * (k - 1) + 1:
            raise InputError(f"spatial dim {i - n_sp} of an input has size {n}, too small for a window of {k} "
                             f"(padding {p}, dilation {d}): the output would be empty")


def pad_spatial(x, n_sp, pads, mode):
    """Pad the last ``n_sp`` dims by ``pads`` ((left, right) per dim, in order) with F.pad's
    ``mode`` (constant, reflect, replicate, circular), as nn.ConvNd pads for its padding_mode.
    Every leading dim is batch-like. An axis too short for reflect / circular is refused by name."""
    spatial = tuple(x.shape[x.dim() - n_sp :])
    for i, (n, (left, right)) in enumerate(zip(spatial, pads)):
        most = max(left, right)
        if (mode == "reflect" and most >= n) or (mode == "circular" and most > n):
            need = "more than" if mode == "reflect" else "at least"
            raise InputError(f"spatial dim {i - n_sp} of an input has size {n}: {mode} padding by {most} needs "
                             f"{need} {most} positions")
    flat = [p for pair in reversed(list(pads)) for p in pair]  # F.pad lists the last dim first
    lead = tuple(x.shape[: x.dim() - n_sp])
    xb = x.reshape((-1, 1) + spatial)
    y = torch.nn.functional.pad(xb, flat, mode=mode)
    return y.reshape(lead + tuple(y.shape[2:]))


def _prod(shape):
    n = 1
    for s in shape:
        n *= s
    return n


def conv_per_example(x, w, n_batch, n_in, n_out, n_sp, transposed, **options):
    """A convolution whose weights carry leading lifted dims (per-example weights made by another
    block, or a kernel lifted over channels: a depthwise conv): one grouped conv, a group per
    lifted index. x: [*lifted, *batch, *c_in, *spatial] (``n_batch`` batch-like core dims);
    w: [*lifted, *c_out, *c_in, *kernel]; lifted dims broadcast. Returns
    [*lifted, *batch, *c_out, *spatial_out]."""
    if not transposed:
        check_window(x, n_sp, tuple(w.shape[w.dim() - n_sp :]), options["stride"], options["padding"],
                     options["dilation"])
    k = w.dim() - (n_out + n_in + n_sp)
    kx = x.dim() - (n_batch + n_in + n_sp)
    x = x.reshape((1,) * (k - kx) + tuple(x.shape)) if kx < k else x
    w = w.reshape((1,) * (kx - k) + tuple(w.shape)) if k < kx else w
    k = max(k, kx)
    lifted = tuple(torch.broadcast_shapes(x.shape[:k], w.shape[:k]))
    x = x.expand(lifted + tuple(x.shape[k:]))
    w = w.expand(lifted + tuple(w.shape[k:]))
    groups = _prod(lifted)
    batch = tuple(x.shape[k : k + n_batch])
    c_in = _prod(x.shape[k + n_batch : k + n_batch + n_in])
    spatial = tuple(x.shape[x.dim() - n_sp :])
    c_out_shape = tuple(w.shape[k : k + n_out])
    c_out = _prod(c_out_shape)
    kernel = tuple(w.shape[w.dim() - n_sp :])
    xg = x.reshape((groups, -1, c_in) + spatial).transpose(0, 1).reshape((-1, groups * c_in) + spatial)
    F = torch.nn.functional
    if transposed:
        wg = w.reshape((groups, c_out, c_in) + kernel).transpose(1, 2).reshape((groups * c_in, c_out) + kernel)
        fn = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[n_sp - 1]
    else:
        wg = w.reshape((groups * c_out, c_in) + kernel)
        fn = (F.conv1d, F.conv2d, F.conv3d)[n_sp - 1]
    y = fn(xg, wg, groups=groups, **options)
    out = tuple(y.shape[2:])
    y = y.reshape((-1, groups, c_out) + out).transpose(0, 1)
    return y.reshape(lifted + batch + c_out_shape + out)


def conv_nd(x, w, n_in, n_out, n_sp, stride, padding, dilation):
    """Convolution over the last ``n_sp`` dims of x, contracting the ``n_in`` channel dims before them.

    x: [..., *c_in, *spatial]; w: [*c_out, *c_in, *kernel] (exactly). Every leading dim of x is
    flattened into torch's batch dim, the channel dims into one. Returns [..., *c_out, *spatial_out].
    (Weights with lifted dims of their own run through ``conv_per_example``.)
    """
    check_window(x, n_sp, tuple(w.shape[w.dim() - n_sp :]), stride, padding, dilation)
    lead, c_out_shape, xb, wk = _conv_operands(x, w, n_in, n_out, n_sp)
    fn = (torch.nn.functional.conv1d, torch.nn.functional.conv2d, torch.nn.functional.conv3d)[n_sp - 1]
    y = fn(xb, wk, stride=stride, padding=padding, dilation=dilation)
    return y.reshape(lead + c_out_shape + tuple(y.shape[2:]))


def conv_grouped(x, w, n_group, n_in, n_out, n_sp, stride, padding, dilation):
    """A grouped convolution (torch's ``groups``): x [..., *g, *c_in, *spatial] and
    w [*g, *c_out, *c_in, *kernel]; the group dims ``g`` are kept, each position of them its own
    convolution. Returns [..., *g, *c_out, *spatial_out]. No input channels (c_in empty) with
    no output channels is a depthwise conv."""
    check_window(x, n_sp, tuple(w.shape[w.dim() - n_sp :]), stride, padding, dilation)
    g_shape = tuple(w.shape[:n_group])
    c_out_shape = tuple(w.shape[n_group : n_group + n_out])
    groups, c_out = _prod(g_shape), _prod(c_out_shape)
    c_in = _prod(w.shape[n_group + n_out : n_group + n_out + n_in])
    kernel = tuple(w.shape[w.dim() - n_sp :])
    spatial = tuple(x.shape[x.dim() - n_sp :])
    lead = tuple(x.shape[: x.dim() - n_group - n_in - n_sp])
    xb = x.reshape((-1, groups * c_in) + spatial)
    wk = w.reshape((groups * c_out, c_in) + kernel)
    fn = (torch.nn.functional.conv1d, torch.nn.functional.conv2d, torch.nn.functional.conv3d)[n_sp - 1]
    y = fn(xb, wk, stride=stride, padding=padding, dilation=dilation, groups=groups)
    return y.reshape(lead + g_shape + c_out_shape + tuple(y.shape[2:]))


def conv_transpose_nd(x, w, n_in, n_out, n_sp, stride, padding, dilation, output_padding):
    """Transposed convolution, laid out like ``conv_nd``: x [..., *c_in, *spatial], w [*c_out, *c_in, *kernel]."""
    lead, c_out_shape, xb, wk = _conv_operands(x, w, n_in, n_out, n_sp)
    wk = wk.transpose(0, 1)
    fn = (torch.nn.functional.conv_transpose1d, torch.nn.functional.conv_transpose2d,
          torch.nn.functional.conv_transpose3d)[n_sp - 1]
    y = fn(xb, wk, stride=stride, padding=padding, output_padding=output_padding, dilation=dilation)
    return y.reshape(lead + c_out_shape + tuple(y.shape[2:]))


def pool_nd(x, kind, n_sp, size, stride, padding, ceil_mode=False, dilation=1):
    """Max or average pooling over the last ``n_sp`` dims; every leading dim is batch-like.
    ``ceil_mode``: torch's, a last partial window kept when it starts inside the input."""
    check_window(x, n_sp, size, stride, padding, dilation, ceil_mode)
    lead = tuple(x.shape[: x.dim() - n_sp])
    xb = x.reshape((-1, 1) + tuple(x.shape[x.dim() - n_sp :]))
    F = torch.nn.functional
    if kind == "max":
        fn = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[n_sp - 1]
        y = fn(xb, size, stride=stride, padding=padding, dilation=dilation, ceil_mode=ceil_mode)
    else:
        fn = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[n_sp - 1]
        y = fn(xb, size, stride=stride, padding=padding, ceil_mode=ceil_mode)
    return y.reshape(lead + tuple(y.shape[2:]))


def upsample_nearest(x, dims, scale):
    """Nearest-neighbour up-sampling by whole factors: each value repeated ``scale`` times per dim
    (one factor for every dim, or a tuple of one each)."""
    for d, f in zip(dims, _each(scale, len(dims))):
        x = torch.repeat_interleave(x, f, dim=d)
    return x


def upsample_linear(x, n_sp, scale, align_corners):
    """Linear interpolation over the last ``n_sp`` dims by whole factors (nn.Upsample's linear,
    bilinear, trilinear with ``scale_factor``); every leading dim is batch-like."""
    spatial = tuple(x.shape[x.dim() - n_sp :])
    lead = tuple(x.shape[: x.dim() - n_sp])
    mode = ("linear", "bilinear", "trilinear")[n_sp - 1]
    y = torch.nn.functional.interpolate(x.reshape((-1, 1) + spatial), scale_factor=scale, mode=mode,
                                        align_corners=align_corners)
    return y.reshape(lead + tuple(y.shape[2:]))


def step_slice(x, dim, t, core):
    """x[t] along ``dim``. Under a parallel scan ``t`` stands for every step at once: it then
    moves the scanned axis in front of the remaining ``core - 1`` core axes instead."""
    if isinstance(t, int):
        return torch.select(x, dim, t)
    if isinstance(t, torch.Tensor):  # a step of torch's scan operator (ncd.export): no data-dependent index
        return x.index_select(dim, t.reshape(1)).squeeze(dim)
    return t.take(x, dim, core)


def linear(x, w, b, n_in):
    """x [..., *in] @ w [*in, *out] (+ b [*out]) as one GEMM with the bias fused (F.linear)."""
    n_out = w.dim() - n_in
    w2 = w.reshape(-1, 1) if n_out == 0 else w.flatten(0, n_in - 1) if n_in > 1 else w
    w2 = w2.flatten(1) if w2.dim() > 2 else w2
    flat = x.flatten(-n_in) if n_in > 1 else x
    y = torch.nn.functional.linear(flat, w2.t(), None if b is None else b.reshape(-1))
    return y.reshape(*y.shape[:-1], *w.shape[n_in:])


def attention(q, k, v, q_perm, k_perm, v_perm, out_perm, scale):
    """softmax(q kᵀ · scale) v on named layouts: permute to [..., heads, T, K], fuse, permute back."""
    out = torch.nn.functional.scaled_dot_product_attention(
        permute_core(q, q_perm), permute_core(k, k_perm), permute_core(v, v_perm), scale=scale)
    return permute_core(out, out_perm)


def trailing_shape(w, n):
    """The normalised shape a fused norm needs: the weight's own (last n) dims."""
    return tuple(w.shape[-n:])


def range_error(message, hint):
    """An InputError carrying a ``hint`` the module reports it with, located."""
    return InputError(message, hint)


def check_ids(idx, n, what):
    """Refuse ids outside 0 .. n-1 by name, before torch's IndexError (or a device-side assert on a
    GPU) would. Skipped while torch.compile / torch.export trace, where a data-dependent test cannot run."""
    if idx.numel() == 0 or torch.compiler.is_compiling() or torch.compiler.is_exporting():
        return
    low, high = int(idx.min()), int(idx.max())
    if low < 0 or high >= n:
        bad = low if low < 0 else high
        raise range_error(f"{what} holds the id {bad}, outside 0 .. {n - 1} (the axis has {n} positions)",
                          "ids must lie in 0 .. n-1 for an axis of n positions (a negative id is refused too)")


def slice_range(x, dim, start, stop, what):
    """x's positions start .. stop-1 along ``dim`` (a view, x.narrow), refused by name when the
    bounds leave the axis or the slice is empty (sizes read off the input only at forward)."""
    n = x.shape[dim]
    if not 0 <= start < stop <= n:
        raise range_error(f"{what} runs {start}:{stop}, outside an axis of {n} positions "
                          f"(a slice needs 0 <= start < stop <= {n})",
                          "a slice's bounds must lie in 0 .. n with start < stop for the input's axis of n positions")
    return x.narrow(dim, start, stop - start)


def select_at(x, dim, index, what):
    """x[A = i] where A is free (read off the input): refused by name when i is past its end."""
    n = x.shape[dim]
    if not 0 <= index < n:
        raise range_error(f"{what} picks position {index}, outside an axis of {n} positions",
                          f"an index must lie in 0 .. n-1: pass an input with more than {index} positions")
    return torch.select(x, dim, index)


def lookup(table, idx, dim, what="the index wire"):
    """Rows of a table by an integer tensor: idx's dims, then the table's other dims (nn.Embedding)."""
    check_ids(idx, table.shape[dim], what)
    return torch.movedim(table, dim, 0)[idx]


def gather_along(x, idx, what="the index wire"):
    """x[..., i] for each index of idx along the last dim, broadcasting every other dim."""
    check_ids(idx, x.shape[-1], what)
    rank = max(x.dim(), idx.dim())
    x = x.reshape((1,) * (rank - x.dim()) + tuple(x.shape))
    idx = idx.reshape((1,) * (rank - idx.dim()) + tuple(idx.shape))
    shape = torch.broadcast_shapes(x.shape[:-1], idx.shape[:-1])
    x = x.expand(*shape, x.shape[-1])
    idx = idx.long().expand(*shape, 1)
    return torch.gather(x, -1, idx).squeeze(-1)


def one_hot(idx, n, like, what="the input of one_hot"):
    """F.one_hot in the float dtype of ``like`` (the default dtype where there is none); an id
    outside 0 .. n-1 is refused by name (torch's "Class values must be smaller than num_classes")."""
    check_ids(idx, n, what)
    out = torch.nn.functional.one_hot(idx.long(), n)
    if like is None:
        return out.to(torch.get_default_dtype())
    return out.to(dtype=like.dtype, device=like.device)


def inv(x):
    """torch.linalg.inv, in float32 for half types (LU has no float16/bfloat16 kernel; a half
    precision inverse would lose most digits anyway), returned in x's dtype."""
    if x.dtype in (torch.float16, torch.bfloat16):
        return torch.linalg.inv(x.float()).to(x.dtype)
    return torch.linalg.inv(x)


def scalar_tensor(x, like):
    """A number (the scan index, or arithmetic on it) as a 0-d float tensor in the module's dtype
    and device; a tensor passes through."""
    if isinstance(x, torch.Tensor):
        return x
    if like is None:
        return torch.tensor(float(x), dtype=torch.get_default_dtype())
    dtype = like.dtype if like.dtype.is_floating_point else torch.get_default_dtype()
    return torch.tensor(float(x), dtype=dtype, device=like.device)


def step_index(t, like):
    """A loop's step index as a 0-d int64 tensor on the module's device (under torch.export it
    already is a tensor)."""
    if isinstance(t, torch.Tensor):
        return t
    return torch.tensor(t, dtype=torch.int64, device=like.device if like is not None else None)


def to_float(x, like):
    if like is None:
        return x.to(torch.get_default_dtype())
    return x.to(dtype=like.dtype, device=like.device)


def clamp_to(x, value, side):
    """max(x, number) / min(x, number): a clamp, since torch.maximum takes two tensors."""
    return torch.clamp(x, min=value) if side == "min" else torch.clamp(x, max=value)


def extreme_of(a, b, side):
    """max(a, b) / min(a, b) of two axis-less values, each a tensor (a [] parameter) or a number."""
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return torch.maximum(a, b) if side == "min" else torch.minimum(a, b)
    if isinstance(a, torch.Tensor):
        return clamp_to(a, b, side)
    if isinstance(b, torch.Tensor):
        return clamp_to(b, a, side)
    return max(a, b) if side == "min" else min(a, b)


def seed_modules(module, seed):
    """Give ``module`` and every module inside it one generator seeded with ``seed`` (None: draw
    from torch's global generator again); returns the module."""
    generator = None if seed is None else torch.Generator().manual_seed(int(seed))
    for inner in module.modules():
        inner._ncd_generator = generator
    return module


def draw_uniform(like, shape, generator):
    """U[0, 1) draws of ``shape`` in ``like``'s dtype, on its device; a seeded generator draws on
    the CPU and moves them, so one seed gives the same draws on every device."""
    if generator is None:
        return torch.rand(shape, dtype=like.dtype, device=like.device)
    return torch.rand(shape, generator=generator, dtype=like.dtype).to(like.device)


def dropout(x, p, training, generator):
    """nn.Dropout: in training, zero each element with probability p and scale the rest by 1/(1-p)."""
    if not training or p == 0:
        return x
    keep = draw_uniform(x, x.shape, generator) >= p
    return torch.where(keep, x * (1.0 / (1.0 - p)), 0.0)


def _draw_shape(a, b):
    like = a if torch.is_tensor(a) else b
    shape = torch.broadcast_shapes(tuple(getattr(a, "shape", ())), tuple(getattr(b, "shape", ())))
    return like, shape


def uniform(low, high, generator):
    """low + (high - low) * u, u ~ U[0, 1) per element of the operands' broadcast shape."""
    like, shape = _draw_shape(low, high)
    return low + (high - low) * draw_uniform(like, shape, generator)


def normal(mean, std, generator):
    """mean + std * eps, eps ~ N(0, 1) per element of the operands' broadcast shape."""
    like, shape = _draw_shape(mean, std)
    if generator is None:
        eps = torch.randn(shape, dtype=like.dtype, device=like.device)
    else:
        eps = torch.randn(shape, generator=generator, dtype=like.dtype).to(like.device)
    return mean + std * eps


def categorical(p, dim, generator):
    """An index along ``dim`` drawn with probability p / sum(p): one uniform per row, inverted
    through the running sum (a category of zero probability is never drawn)."""
    cdf = torch.cumsum(p.detach().movedim(dim, -1), -1).contiguous()
    u = draw_uniform(cdf, cdf.shape[:-1] + (1,), generator) * cdf[..., -1:]
    return torch.searchsorted(cdf, u, right=True).clamp(max=cdf.shape[-1] - 1)[..., 0]


def batch_norm(x, mean, var, count, over, core, training, momentum, eps):
    """F.batch_norm over the lifted dims and the core dims ``over`` (negative), per channel (the
    other core dims, in order: the buffers' layout); in training it updates the running buffers
    in place and adds 1 to ``count``."""
    lead = x.dim() - core
    dims = [x.dim() + d for d in over]
    channels = [d for d in range(lead, x.dim()) if d not in dims]
    order = [*range(lead), *channels, *dims]
    moved = x.permute(order)
    shape = moved.shape
    flat = moved.reshape(-1, _prod(shape[lead:lead + len(channels)]), _prod(shape[lead + len(channels):]))
    out = torch.nn.functional.batch_norm(flat, mean.view(-1), var.view(-1), training=training,
                                         momentum=momentum, eps=eps)
    if training and count is not None:
        with torch.no_grad():
            count.add_(1)
    inverse = [order.index(d) for d in range(x.dim())]
    return out.reshape(shape).permute(inverse)


def rnn_piece(value, piece, size, like):
    """One of a gate's weights in torch's layout ([D, in] or [D]). ``piece``: (slices, axes,
    in_axis, state_axis, coef, number, identity) — the spec's tensor ``value`` with core
    ``axes``, sliced ``(axis, index)`` along gate axes (ncd.passes.recurrence.plan.WeightRef)."""
    selects, axes, in_axis, state_axis, coef, number, identity = piece
    if identity:
        return coef * torch.eye(size, dtype=like.dtype, device=like.device)
    if number is not None:
        return torch.full((size,), coef * number, dtype=like.dtype, device=like.device)
    value = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    axes = list(axes)
    for axis, index in selects:
        dim = axes.index(axis)
        value = value.select(dim, index)
        axes.pop(dim)
    if in_axis is not None:
        value = value.permute(axes.index(state_axis), axes.index(in_axis))
    elif axes != [state_axis]:
        value = value.reshape(()).expand(size)
    return value * coef if coef != 1.0 else value


def rnn_layout(gates):
    """(dims order, gate indices) where one of torch's flat weights is one tensor permuted: every
    gate one slice, along the same axis, of the same tensor with no factor (``W[G = k]``), and the
    gate, state and input axes all of its axes; or (dims order, None) where a cell with one gate
    reads one whole tensor (state and input axes all its axes); None otherwise (rnn_weight sums
    the pieces).
    ``gates``: per gate, (value, piece) pairs; a value may be any object standing for the tensor
    (the same object for the same tensor): this is plain data, computed once by a caller that can."""
    if not gates or any(len(g) != 1 for g in gates):
        return None
    value, piece = gates[0][0]
    if value is not None and len(gates) == 1 and not piece[0] and piece[4] == 1.0 and not piece[6]:
        axes = list(piece[1])  # no gate axis (an Elman cell): the weight is [in, state] or [state]
        wanted = [piece[3]] + ([piece[2]] if piece[2] else [])
        return (tuple(axes.index(a) for a in wanted), None) if sorted(wanted) == sorted(axes) else None
    if value is None or len(piece[0]) != 1:
        return None
    for (other, (selects, axes, in_axis, _, coef, _, _)), in gates:
        if other is not value or len(selects) != 1 or selects[0][0] != piece[0][0][0] or coef != 1.0 \
                or axes != piece[1] or in_axis != piece[2]:
            return None
    selects, axes, in_axis, state_axis = piece[:4]
    axes = list(axes)
    order = [axes.index(selects[0][0]), axes.index(state_axis)] + ([axes.index(in_axis)] if in_axis else [])
    if len(order) != len(axes):
        return None
    return tuple(order), tuple(g[0][1][0][0][1] for g in gates)


def rnn_permuted(value, layout, like):
    """One of torch's flat weights as one permute of the spec's tensor (rnn_layout), and one
    gather where the spec's gate order is not torch's. No copy otherwise: the spec's W_ih
    [I, G, D] permuted is a strided view of shape [G·D, I] (its G and D dims merge), which
    torch's operator reads as it is (its matmuls and oneDNN's weight reorder take any strides),
    so the forward pass copies no weight; a bias [G, D] is a view too."""
    order, index = layout
    if not isinstance(value, torch.Tensor) or value.dtype != like.dtype or value.device != like.device:
        value = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if order != tuple(range(len(order))):
        value = value.permute(order)
    if index is None:  # no gate axis
        return value
    if index != tuple(range(value.shape[0])):
        value = value.index_select(0, torch.tensor(index, device=value.device))
    return value.reshape(len(index) * value.shape[1], *value.shape[2:])


def rnn_weight(gates, size, shape, like, layout=False):
    """One of torch's flat weights: each gate's pieces summed, the gates stacked; one permute
    where rnn_layout finds one (``layout``: its result when the caller has it, False: find it).
    ``gates``: per gate, (value, piece) pairs."""
    if layout is False:
        layout = rnn_layout(gates)
    if layout is not None:
        return rnn_permuted(gates[0][0][0], layout, like)
    parts = []
    for pieces in gates:
        if not pieces:
            parts.append(like.new_zeros(shape))
            continue
        total = rnn_piece(pieces[0][0], pieces[0][1], size, like)
        for value, piece in pieces[1:]:
            total = total + rnn_piece(value, piece, size, like)
        parts.append(total)
    return torch.cat(parts).contiguous()


def rnn_weights(slots, size, n_in, like):
    """torch's four flat weights (w_ih, w_hh, b_ih, b_hh) from per-gate (value, piece) lists."""
    shapes = ((size, n_in), (size, size), (size,), (size,))
    return [rnn_weight(gates, size, shape, like) for gates, shape in zip(slots, shapes)]


def fused_rnn(cell, x, x_dims, inits, hidden, cell_carry, reverse, training, slots, with_state=False,
              weights=None):
    """A scan proved to be torch's Elman / GRU / LSTM cell, run by the operator nn.RNN / GRU /
    LSTM call. ``x``: the input sequence, its scanned and input dims at ``x_dims`` (counted from
    the end); ``inits``: the carries' initial values; ``slots``: w_ih, w_hh, b_ih, b_hh as
    per-gate (value, piece) lists (see rnn_weight), gates in torch's order. ``weights``: instead
    of slots, a function (size, n_in, like) -> the four flat weights (the in-process module's,
    which knows their layouts from load time). ``with_state``: return (outputs, final carries in
    the order of ``inits``)."""
    lead = x.dim() - len(x_dims)
    if tuple(x_dims) != tuple(range(len(x_dims))):
        x = x.permute(*range(lead), *(lead + d for d in x_dims))
    steps, n_in = x.shape[-2], x.shape[-1]
    states = [h if isinstance(h, torch.Tensor) and h.dtype == x.dtype and h.device == x.device
              else torch.as_tensor(h, dtype=x.dtype, device=x.device) for h in inits]
    size = states[hidden].shape[-1]
    batch = tuple(x.shape[:lead])
    if any(h.dim() > 1 for h in states):
        batch = tuple(torch.broadcast_shapes(batch, *(tuple(h.shape[:-1]) for h in states if h.dim())))
    rows = 1
    for n in batch:
        rows *= n
    weights = rnn_weights(slots, size, n_in, x) if weights is None else weights(size, n_in, x)
    if cell == "lstm":
        # oneDNN's LSTM copies a strided weight itself; copying here instead hands the operator the
        # same layout from every caller (float64's matmuls then sum alike, in-process and emitted),
        # and is a no-op on weights held in torch's layout (fused_rnn.FusedRNN.hold_weights)
        weights = [w.contiguous() for w in weights]
    if rows == 0 or steps == 0:
        out = x.new_zeros(*batch, steps, size) + 0 * (x.sum() + sum(w.sum() for w in weights))  # every grad: zeros
        return (out, [h.expand(*batch, size) for h in states]) if with_state else out
    if tuple(x.shape[:lead]) != batch:
        x = x.expand(*batch, steps, n_in)
    if lead != 1:  # torch's operator takes [rows, steps, n_in]: one lifted dim is that already
        x = x.reshape(rows, steps, n_in)
    if reverse:
        x = x.flip(1)
    flat = [h.expand(1, rows, size) if h.dim() == 1 else h.expand(*batch, size).reshape(1, rows, size)
            for h in states]
    hx = (flat[hidden], flat[cell_carry]) if cell == "lstm" else flat[hidden]  # expanded: the operator copies
    run = torch.lstm if cell == "lstm" else torch.gru if cell == "gru" else \
        torch.rnn_tanh if cell == "rnn_tanh" else torch.rnn_relu
    out, *last = run(x.contiguous(), hx, weights, True, 1, 0.0, training, False, True)
    if reverse:
        out = out.flip(1)
    if lead != 1:
        out = out.reshape(*batch, steps, size)
    if not with_state:
        return out
    finals = list(states)
    finals[hidden] = last[0].reshape(*batch, size)
    if cell == "lstm":
        finals[cell_carry] = last[1].reshape(*batch, size)
    return out, finals


def state_begin(module, paths, names, initial_state):
    """Open one call's carried states (docs/language.md, "State in and out"): the modules at
    ``paths`` (relative to ``module``; each a path, or a (path, name prefix) pair where state
    names spell the path otherwise) read their scans' initial states from ``initial_state``
    (name -> tensor, names among ``names``) and write their final states into the session's
    ``final``. Returns the session; ``state_end`` closes it."""
    initial = dict(initial_state or {})
    for key, value in initial.items():
        if key not in names:
            known = ", ".join(names) or "none: this module has no scan"
            raise ValueError(f"initial_state has no state named {key!r} (the states: {known})")
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"initial state {key} must be a tensor, got {type(value).__name__}")
    session = {"initial": initial, "final": {}}
    inner = dict(module.named_modules())
    for item in paths:
        path, prefix = (item, item) if isinstance(item, str) else item
        inner[path].__dict__["_ncd_state_io"] = (session, f"{prefix}." if prefix else "")
    return session


def run_with_state(module, paths, names, initial_state, return_state, run, inputs):
    """``run(*inputs)`` with the carried states of ``module`` opened (state_begin .. state_end);
    returns the outputs, and with ``return_state`` also the final states by name."""
    session = state_begin(module, paths, names, initial_state)
    try:
        outputs = run(*inputs)
    finally:
        state_end(module, paths)
    if not return_state:
        return outputs
    final = session["final"]
    return outputs, {name: final[name] for name in names if name in final}


def state_error(message):
    error = ValueError(message)
    error.hint = "pass a previous call's final_state, or module.initial_state(B): [*lead, *state_spec() shape]"
    return error


def state_end(module, paths):
    inner = dict(module.named_modules())
    for item in paths:
        inner[item if isinstance(item, str) else item[0]].__dict__.pop("_ncd_state_io", None)


def state_in(module, name, value, rank):
    """A scan's initial carry: the call's ``initial_state`` entry for it when one was given
    (its last ``rank`` dims, dtype and device those of the spec's own ``value``), else ``value``."""
    io = module.__dict__.get("_ncd_state_io")
    if io is None:
        return value
    session, prefix = io
    given = session["initial"].get(prefix + name)
    if given is None:
        return value
    if isinstance(value, torch.Tensor):
        core = tuple(value.shape[value.dim() - rank:]) if rank else ()
        if given.dim() < rank or tuple(given.shape[given.dim() - rank:]) != core:
            raise state_error(f"initial state {prefix + name} has shape {tuple(given.shape)}; "
                              f"its shape is (*lead, {', '.join(map(str, core))}), lifted dims first")
        if given.dtype != value.dtype or given.device != value.device:
            raise state_error(f"initial state {prefix + name} is {given.dtype} on {given.device}; "
                              f"this call's states are {value.dtype} on {value.device}")
    return given


def state_out(module, name, value):
    """Record a scan's final carry under its state name (a call opened by ``state_begin``)."""
    io = module.__dict__.get("_ncd_state_io")
    if io is None:
        return
    session, prefix = io
    key = prefix + name
    given = session["initial"].get(key)
    if given is not None and isinstance(value, torch.Tensor) and given.shape != value.shape \
            and tuple(torch.broadcast_shapes(given.shape, value.shape)) != tuple(value.shape):
        raise state_error(f"initial state {key} has shape {tuple(given.shape)}; this call's state {key} "
                          f"has shape {tuple(value.shape)}")
    session["final"][key] = value


def owned(module, outputs):
    """A module's outputs, each a tensor of its own (not a view) where FSDP2 wraps the module
    (``fully_shard``): FSDP hooks the outputs for its backward all-gather, and an in-place op on
    a returned view would drop that hook (torch warns that the module returned a view). A module
    FSDP does not wrap returns its outputs as computed, views included (no copy)."""
    fsdp = getattr(getattr(torch, "distributed", None), "fsdp", None)  # loaded only where FSDP is used
    wrapper = getattr(fsdp, "FSDPModule", None)
    if wrapper is None or not isinstance(module, wrapper):
        return outputs
    if isinstance(outputs, torch.Tensor):
        return outputs.clone() if outputs._base is not None else outputs
    if isinstance(outputs, (tuple, list)):
        return type(outputs)(owned(module, o) for o in outputs)
    if isinstance(outputs, dict):
        return {k: owned(module, v) for k, v in outputs.items()}
    return outputs


def state_record(module, name, value, dim, width):
    """A prefill's cache or window (ncd/passes/step.py Record) as a final state: a cache is
    ``value`` itself (every position so far along ``dim``); a window (``width`` > 0) its last
    ``width`` positions along ``dim``, zeros before the first, as a causal convolution pads."""
    if module.__dict__.get("_ncd_state_io") is None:
        return
    if width:
        length = value.shape[dim]
        if length >= width:
            value = value.narrow(dim, length - width, width)
        else:
            pad = list(value.shape)
            pad[dim] = width - length
            value = torch.cat([value.new_zeros(pad), value], dim)
    state_out(module, name, value)


def initial_states(module, table, lead, dtype=None, device=None):
    """Every state at the spec's own initial value, ``[*lead, *shape]``: ``table`` rows are
    (name, holder path, per-example shape, initial value), the value a number or the name of a
    weight of the holder (None: the spec computes it from the inputs; left out, so a call given
    this dict starts it from the spec's value). Default dtype and device: the module's parameters'."""
    like = next((p for p in module.parameters() if p.is_floating_point()), None)
    dtype = dtype or (like.dtype if like is not None else torch.get_default_dtype())
    device = device or (like.device if like is not None else "cpu")
    inner = dict(module.named_modules())
    out = {}
    for name, path, shape, init in table:
        if init is None:
            continue  # computed from the inputs: a call without it starts from the spec's value
        if any(n is None for n in shape):
            error = ValueError(f"state {name} has an axis whose size is not bound")
            error.hint = "bind its size when loading the spec"
            raise error
        size = (*lead, *shape)
        if isinstance(init, str):
            out[name] = getattr(inner[path], init).to(dtype=dtype, device=device).expand(size).clone()
        else:
            out[name] = torch.full(size, float(init), dtype=dtype, device=device)
    return out


def packed_hint():
    """The hint of every error about a packed call's offsets or layout (a function: emitted files copy functions)."""
    return ("cu_seqlens = torch.tensor([0, T_1, T_1 + T_2, ..., total]) (int64), the inputs packed along the "
            "scanned axis with a batch of 1 (fla's convention)")


def packed_lengths(cu_seqlens, total):
    """The sequence lengths of packed offsets ``cu_seqlens`` ([N + 1] integers from 0 to
    ``total``, never decreasing: a repeated offset is an empty sequence); an InputError
    quoting the numbers otherwise."""
    if not isinstance(cu_seqlens, torch.Tensor):
        raise InputError(f"cu_seqlens must be a 1-D integer torch.Tensor of offsets [N + 1], got "
                         f"{type(cu_seqlens).__name__}", packed_hint())
    if cu_seqlens.dtype.is_floating_point or cu_seqlens.dtype.is_complex or cu_seqlens.dtype == torch.bool:
        raise InputError(f"cu_seqlens must hold integers (int32 or int64), got {cu_seqlens.dtype}", packed_hint())
    if cu_seqlens.ndim != 1 or cu_seqlens.numel() < 2:
        raise InputError(f"cu_seqlens must be 1-D with N + 1 >= 2 offsets, got shape {tuple(cu_seqlens.shape)}",
                         packed_hint())
    offs = cu_seqlens.detach().to("cpu", torch.int64).tolist()
    if offs[0] != 0:
        raise InputError(f"cu_seqlens must start at 0, got {offs[0]}", packed_hint())
    for i in range(len(offs) - 1):
        if offs[i + 1] < offs[i]:
            raise InputError(f"cu_seqlens must never decrease, got cu_seqlens[{i}] = {offs[i]} then "
                             f"cu_seqlens[{i + 1}] = {offs[i + 1]}", packed_hint())
    if offs[-1] != total:
        raise InputError(f"cu_seqlens must end at the packed length {total}, got {offs[-1]}", packed_hint())
    if total == 0:
        raise InputError("every sequence of cu_seqlens is empty: there is no position to run",
                         "give at least one sequence a step")
    return [b - a for a, b in zip(offs[:-1], offs[1:])]


def packed_layout(inputs, axes, axis):
    """Where ``axis`` sits in each input (None: not there), whether the inputs have a lead batch
    of 1 (else none), and the packed length."""
    where, batched, total = [], set(), set()
    for x, core in zip(inputs, axes):
        if axis not in core or not isinstance(x, torch.Tensor):
            where.append(None)
            continue
        lead = x.dim() - len(core)
        if lead < 0 or lead > 1 or (lead == 1 and x.shape[0] != 1):
            raise InputError(f"with cu_seqlens, the inputs must be packed into a batch of 1 or none: shape "
                             f"[1, {', '.join(core)}] or [{', '.join(core)}], got {tuple(x.shape)}", packed_hint())
        batched.add(lead == 1)
        where.append(lead + core.index(axis))
        total.add(int(x.shape[lead + core.index(axis)]))
    if len(batched) != 1:
        raise InputError("with cu_seqlens, the packed inputs must all have a batch of 1 or all none"
                         if batched else f"cu_seqlens packs sequences along axis {axis}, but no input carries it",
                         packed_hint())
    if len(total) > 1:
        raise InputError(f"the packed inputs disagree on the length of axis {axis}: {sorted(total)}", packed_hint())
    return where, batched.pop(), total.pop()


def packed_state_rows(initial_state, n):
    """Each initial state must hold one state per sequence: a first dim of N."""
    for name, value in (initial_state or {}).items():
        if isinstance(value, torch.Tensor) and (value.dim() == 0 or value.shape[0] != n):
            raise InputError(f"with cu_seqlens of {n} sequences, initial state {name} needs one state per "
                             f"sequence: a first dim of {n}, got shape {tuple(value.shape)}",
                             "stack one initial state per sequence along a new first dim, or leave it out")


def packed_row(t, i, batched):
    """Sequence i's row of a [N, ...] tensor, shaped as one call with (or without) a batch of 1."""
    return t[i:i + 1] if batched else t[i]


def packed_join(parts, batched, core=None):
    """Sequences' rows joined into one [N, ...] tensor. ``core``: a state's core rank; a
    sequence's state that never met the batch (driven by parameters only) lacks the batch of 1
    the others have, and gets it before the join."""
    if batched and core is not None:
        parts = [p.unsqueeze(0) if p.dim() == core else p for p in parts]
    return torch.cat(parts, 0) if batched else torch.stack(parts, 0)


def run_packed_each(module, inputs, axes, outputs, axis, cu_seqlens, initial_state, return_state):
    """``module`` on N sequences packed along ``axis`` (docs/language.md, "Packed variable-length
    batches"), each sequence alone through ``module(..., initial_state=, return_state=True)``:
    outputs over the axis concatenated along it, outputs without it stacked (a leading N), final
    states stacked; an empty sequence adds no output and its final state is its initial one.
    ``axes``/``outputs``: each input's and output's core axes."""
    where, batched, total = packed_layout(inputs, axes, axis)
    sizes = packed_lengths(cu_seqlens, total)
    n = len(sizes)
    states = dict(initial_state or {})
    packed_state_rows(states, n)
    split = [torch.split(x, sizes, dim=w) if w is not None else None for x, w in zip(inputs, where)]
    outs, finals = [], []
    for i in range(n):
        if sizes[i] == 0:
            finals.append(None)
            continue
        seq_inputs = tuple(x if s is None else s[i] for x, s in zip(inputs, split))
        seq_state = {k: packed_row(v, i, batched) if isinstance(v, torch.Tensor) else v for k, v in states.items()}
        out, final = module(*seq_inputs, initial_state=seq_state or None, return_state=True)
        outs.append(out)
        finals.append(final)
    single = not isinstance(outs[0], tuple)
    columns = [[o] for o in outs] if single else [list(o) for o in outs]
    joined = []
    for j, core in enumerate(outputs):
        parts = [c[j] for c in columns]
        if axis in core:
            joined.append(torch.cat(parts, parts[0].dim() - len(core) + core.index(axis)))
            continue
        if 0 in sizes:
            raise InputError(f"output {j} has no axis {axis}, so an empty sequence of cu_seqlens has no value for it",
                             "drop the empty sequences from cu_seqlens")
        if len({tuple(p.shape) for p in parts}) > 1:
            raise InputError(f"output {j} has no axis {axis} but its shape differs between the packed sequences "
                             f"({sorted({tuple(p.shape) for p in parts})}), so it cannot be stacked",
                             "call the module once per sequence without cu_seqlens")
        joined.append(packed_join(parts, batched))
    joined = joined[0] if single else tuple(joined)
    if not return_state:
        return joined
    like = next(f for f in finals if f is not None)
    own = None
    result = {}
    for name, value in like.items():
        parts = []
        for i, final in enumerate(finals):
            if final is not None:
                parts.append(final[name])
                continue
            if name in states:
                start = packed_row(states[name], i, batched)
            else:
                own = own if own is not None else module.initial_state(dtype=value.dtype, device=value.device)
                if name not in own:
                    raise InputError(f"sequence {i} of cu_seqlens is empty, and state {name} starts from a value "
                                     f"the spec computes from the inputs, so it has no final state",
                                     f"pass initial_state[{name!r}], or drop the empty sequence")
                start = own[name]
            parts.append(torch.broadcast_to(start.to(value.dtype), value.shape))
        result[name] = packed_join(parts, batched, len(module.state_spec()[name][0]))
    return joined, result
