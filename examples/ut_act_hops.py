"""Universal Transformer with ACT (Dehghani et al. 2018): ponder time grows with the task's difficulty.

The task is copying through pointers. Each example is a sequence of T positions; position i holds
a pointer π(i) (π a random permutation of the positions) and a value v(i) ∈ [0, V), and every
position of an example carries the same hop count k. The target at position i is v(π^k(i)):
k = 0 is the plain copy task (emit your own value), each further k is one more hop of indirection,
i.e. one more lookup by attention, the analogue of the UT paper's bAbI tasks that need 1, 2, 3
supporting facts (where the paper reports more ponder time for the harder tasks).

The model is the library's `universal_transformer` entry `UTACTGraves` (one shared post-LN encoder
layer, ACT as in Graves 2016, at most S steps) between a learned embedding of (pointer, value, k)
and a linear readout of V classes, trained with cross-entropy + τ · mean ponder cost (Graves'
time penalty) on examples whose k is drawn uniformly from 0 .. K. The table gives, per k, the
accuracy, the mean ponder cost N + R and the mean number of layer applications N on fresh
examples. Seeds fixed; Adam, one thread.

    .venv/bin/python examples/ut_act_hops.py          # the table in docs/papers.md
    .venv/bin/python examples/ut_act_hops.py --quick  # a smoke run, seconds
"""
from __future__ import annotations

import argparse
import time

import torch
from torch import nn

import ncd


def batch(n: int, T: int, V: int, K: int, gen: torch.Generator, k: int | None = None
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """pointers [n, T], values [n, T], hop counts [n], targets v(π^k(i)) [n, T]."""
    ptr = torch.argsort(torch.rand(n, T, generator=gen), dim=1)
    val = torch.randint(0, V, (n, T), generator=gen)
    hops = torch.randint(0, K + 1, (n,), generator=gen) if k is None else torch.full((n,), k)
    at = torch.arange(T).expand(n, T)
    for step in range(K):
        follow = (hops > step)[:, None]
        at = torch.where(follow, torch.gather(ptr, 1, at), at)
    return ptr, val, hops, torch.gather(val, 1, at)


class HopModel(nn.Module):
    """Embedding of (pointer, value, k) → the spec's UT with ACT → linear readout over V."""

    def __init__(self, T: int, V: int, K: int, D: int, H: int, F: int, S: int) -> None:
        super().__init__()
        self.ptr, self.val, self.hops = nn.Embedding(T, D), nn.Embedding(V, D), nn.Embedding(K + 1, D)
        self.ut = ncd.load("universal_transformer", D=D, H=H, F=F, S=S).entry("UTACTGraves")
        self.out = nn.Linear(D, V)

    def forward(self, ptr: torch.Tensor, val: torch.Tensor, hops: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.ptr(ptr) + self.val(val) + self.hops(hops)[:, None, :]
        y, ponder = self.ut(x)
        return self.out(y), ponder


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a smoke run: few steps, small sizes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--T", type=int, default=8, help="positions")
    p.add_argument("--V", type=int, default=8, help="values")
    p.add_argument("--K", type=int, default=3, help="largest hop count")
    p.add_argument("--D", type=int, default=32)
    p.add_argument("--H", type=int, default=2)
    p.add_argument("--F", type=int, default=64)
    p.add_argument("--S", type=int, default=5, help="most ACT steps")
    p.add_argument("--tau", type=float, default=0.01, help="weight of the ponder cost in the loss")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--test", type=int, default=1000, help="test examples per hop count")
    args = p.parse_args()
    if args.quick:
        args.steps, args.D, args.F, args.test = 5, 8, 16, 32
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    model = HopModel(args.T, args.V, args.K, args.D, args.H, args.F, args.S)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    start = time.time()
    for step in range(1, args.steps + 1):
        ptr, val, hops, target = batch(args.batch, args.T, args.V, args.K, gen)
        logits, ponder = model(ptr, val, hops)
        ce = nn.functional.cross_entropy(logits.reshape(-1, args.V), target.reshape(-1))
        loss = ce + args.tau * ponder.mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 250 == 0:
            print(f"# step {step}: cross-entropy {ce.item():.3f}, mean ponder {ponder.mean().item():.2f}, "
                  f"{time.time() - start:.0f} s")
    print(f"# seed={args.seed} steps={args.steps} T={args.T} V={args.V} D={args.D} H={args.H} F={args.F} "
          f"S={args.S} tau={args.tau} lr={args.lr} batch={args.batch}; {time.time() - start:.0f} s training")
    print("| hops k | accuracy | mean ponder N + R | ponder std | mean steps N |")
    print("|---|---|---|---|---|")
    with torch.no_grad():
        for k in range(args.K + 1):
            ptr, val, hops, target = batch(args.test, args.T, args.V, args.K, gen, k=k)
            logits, ponder = model(ptr, val, hops)
            acc = (logits.argmax(-1) == target).double().mean().item()
            steps = torch.ceil(ponder) - 1                         # R ∈ (0, 1], so N = ⌈N + R⌉ − 1
            print(f"| {k} | {acc:.3f} | {ponder.mean().item():.3f} | {ponder.std().item():.3f} | "
                  f"{steps.mean().item():.2f} |")
    print(f"# chance accuracy {1 / args.V:.3f}; ponder ranges over [1, S + 1] = [1, {args.S + 1}]")


if __name__ == "__main__":
    main()
