"""Weight mappings for torch.nn's batch, group and instance norms into blocks written as
docs/language.md's "Batch statistics" section writes them.

The names are torch's own (``weight``, ``bias``, ``running_mean``, ``running_var``,
``num_batches_tracked``), so the mapping is the identity by name; what it adds over
``load_state_dict`` is the checks, each an NcdError: every tensor the reference holds has a
place of the same shape in the compiled block, and the block holds no weight or statistic the
reference lacks (affine=False against a block with ``* weight + bias``, or the other way round).
"""
from __future__ import annotations

from torch import nn

from ncd.errors import NcdError

_HINT = ("write the block as docs/language.md's batch-statistics section does: params weight, bias "
         "and buffers running_mean, running_var, num_batches_tracked, of the channel axes")


def _load(compiled: nn.Module, reference: nn.Module) -> None:
    kind = type(reference).__name__
    theirs = reference.state_dict()
    ours = dict(compiled.named_parameters())
    ours.update({n: b for n, b in compiled.named_buffers() if "." not in n and n in
                 ("running_mean", "running_var", "num_batches_tracked")})
    block = str(getattr(compiled, "_ncd_block", type(compiled).__name__))
    for name, value in theirs.items():
        target = ours.get(name)
        if target is None:
            raise NcdError(f"{kind}'s {name} has no place in block {block}", hint=_HINT)
        if target.numel() != value.numel() or (target.dim() and tuple(target.shape) != tuple(value.shape)):
            raise NcdError(f"{kind}'s {name} has shape {tuple(value.shape)}, block {block}'s "
                           f"{tuple(target.shape)}", hint="bind the channel axis to the reference's num_features")
    extra = sorted(set(ours) - set(theirs))
    if extra:
        raise NcdError(f"block {block} has {', '.join(extra)}, which {kind} does not hold",
                       hint="affine=False has no weight and bias; track_running_stats=False no running statistics")
    for name, value in theirs.items():
        target = ours[name]
        target.data.copy_(value.reshape(target.shape))


HANDLERS: dict = {nn.modules.batchnorm._BatchNorm: _load, nn.GroupNorm: _load,
                  nn.modules.instancenorm._InstanceNorm: _load}
