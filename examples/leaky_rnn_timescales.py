"""Leaky RNN on the N-parity curriculum (Khajehabdollahi et al. 2023): learned time constants τ by N.

The task: a stream of random bits x_t; the target at step t is the parity of the last N bits
(x_{t−N+1} + … + x_t mod 2), scored from step N on. The paper trains leaky ReLU RNNs with a
trainable time constant per unit on a curriculum of growing N and reports that under the
single-head curriculum (one readout, retrained on each new N) the single-unit time constants τ
grow with N, while under the multi-head curriculum (a head per task n = 1 .. N, all trained at
once) the network keeps short τ and builds its long timescales through the recurrence.

Here, small: `leaky_rnn` (D units, τ initialised at --tau0), N = 2 … 4 (--Ns), each stage trained until its
accuracy on fresh sequences reaches --criterion or --steps run out, then the next N starts from
the trained weights. `--curricula single` uses the entry `LeakyRNN` (one head, the head re-used
across stages); `multi` uses `LeakyRNNTasks` (head n reads the parity of the last n + 1 bits,
the loss averages the heads up to the stage's N). After each stage the table gives the stage's
accuracy (of the head for N), the steps used and the mean / median / 90th percentile of τ.
Seeds fixed; Adam, one thread.

    .venv/bin/python examples/leaky_rnn_timescales.py          # the table in docs/papers.md
    .venv/bin/python examples/leaky_rnn_timescales.py --quick  # a smoke run, seconds
"""
from __future__ import annotations

import argparse
import time

import torch
from torch import nn

import ncd


def parity_batch(n: int, T: int, N: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """bits [n, T, 1] and the parity of the last 1 .. N bits at every step, [n, T, N] (long)."""
    bits = torch.randint(0, 2, (n, T), generator=gen)
    sums = torch.stack([sum(bits.roll(j, dims=1) * (torch.arange(T) >= j) for j in range(k))
                        for k in range(1, N + 1)], dim=-1)
    return bits[..., None].float(), sums % 2


def stage_loss(out: torch.Tensor, target: torch.Tensor, N: int, multi: bool) -> torch.Tensor:
    """Cross-entropy from step N on: the head for N alone (single) or heads 1 .. N (multi)."""
    if multi:
        logits, labels = out[:, N - 1:, :N], target[:, N - 1:, :N]
    else:
        logits, labels = out[:, N - 1:, None], target[:, N - 1:, N - 1:N]
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))


def head_for(out: torch.Tensor, N: int, multi: bool) -> torch.Tensor:
    return out[:, N - 1:, N - 1] if multi else out[:, N - 1:]


def run(curriculum: str, args: argparse.Namespace) -> None:
    multi = curriculum == "multi"
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    top = max(args.Ns)
    model = ncd.load("leaky_rnn", block="LeakyRNNTasks" if multi else "LeakyRNN", D=args.D,
                     **({"N": top} if multi else {}))
    with torch.no_grad():
        model.tau.fill_(args.tau0)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    start = time.time()
    for N in args.Ns:
        used, acc = 0, 0.0
        for used in range(1, args.steps + 1):
            x, target = parity_batch(args.batch, args.T, top, gen)
            loss = stage_loss(model(x), target, N, multi)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if used % args.eval_every == 0 or used == args.steps:
                with torch.no_grad():
                    x, target = parity_batch(512, args.T, top, gen)
                    pred = head_for(model(x), N, multi).argmax(-1)
                    acc = (pred == target[:, N - 1:, N - 1]).double().mean().item()
                if acc >= args.criterion:
                    break
        tau = torch.clamp(model.tau.detach(), min=1.0)
        q = torch.quantile(tau, torch.tensor([0.5, 0.9]))
        print(f"| {curriculum} | {N} | {acc:.3f} | {used} | {tau.mean():.3f} | {q[0]:.3f} | {q[1]:.3f} | "
              f"{time.time() - start:.0f} |", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a smoke run: few steps, small sizes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--curricula", nargs="+", choices=["single", "multi"], default=["single", "multi"])
    p.add_argument("--Ns", type=int, nargs="+", default=[2, 3, 4])
    p.add_argument("--steps", type=int, default=600, help="most training steps per stage")
    p.add_argument("--criterion", type=float, default=0.98, help="accuracy that ends a stage")
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--D", type=int, default=64, help="units")
    p.add_argument("--T", type=int, default=30, help="sequence length")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--tau0", type=float, default=2.0, help="initial τ of every unit (the spec's default is 2)")
    args = p.parse_args()
    if args.quick:
        args.steps, args.D, args.T, args.eval_every = 3, 8, 8, 3
    torch.set_num_threads(1)
    print(f"# seed={args.seed} D={args.D} T={args.T} batch={args.batch} lr={args.lr} "
          f"steps<={args.steps} per stage, criterion {args.criterion}; τ initialised at {args.tau0}")
    print("| curriculum | N | accuracy | steps | mean τ | median τ | 90th pct τ | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    for curriculum in args.curricula:
        run(curriculum, args)


if __name__ == "__main__":
    main()
