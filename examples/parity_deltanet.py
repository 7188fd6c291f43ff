"""Parity with one DeltaNet or Mamba layer: eigenvalues in [−1, 1] learn it and generalise, [0, 1] do not.

Grazzi et al. 2024 (Unlocking State-Tracking in Linear RNNs Through Negative Eigenvalues), the
setting of their Figure 1, shrunk to run on a CPU in minutes: bit strings, the label at every
position is the parity of the bits so far; train on strings of length ≤ --train-len, test on
longer ones. The model is an embedding of the bit, one `deltanet` layer from the ncd library
(specs/deltanet.ncd: `DeltaNet` has β = 2σ(·), `DeltaNet01` β = σ(·)) with a residual
connection, and a linear read-out. Nothing else differs between the two settings.
`--model mamba` uses one `mamba_negeig` layer instead (specs/mamba_negeig.ncd: `Mamba` has
Ā = 2 exp(ΔA) − 1 ∈ (−1, 1), `Mamba01` Ā = exp(ΔA) ∈ (0, 1)).

    .venv/bin/python examples/parity_deltanet.py                  # the DeltaNet table in docs/parity.md
    .venv/bin/python examples/parity_deltanet.py --model mamba    # the Mamba table in docs/parity.md
    .venv/bin/python examples/parity_deltanet.py --quick          # a smoke run, seconds

Accuracy is per position: "train" on fresh strings of the training length, "T=n" on strings of
length n counting only the positions beyond the training length (every position there is a
longer prefix than any seen in training), and "last" the accuracy at the final position alone.
"""
from __future__ import annotations

import argparse
import time

import torch
from torch import nn

import ncd


class ParityModel(nn.Module):
    def __init__(self, neg: bool, d: int, heads: int, model: str = "deltanet", states: int = 8) -> None:
        super().__init__()
        self.embed = nn.Embedding(2, d)
        if model == "mamba":
            self.layer = ncd.load("mamba_negeig", block="Mamba" if neg else "Mamba01", D=d, N=states,
                                  scan_backend="sequential")
        else:
            block = "DeltaNet" if neg else "DeltaNet01"
            self.layer = ncd.load("deltanet", block=block, D=d, H=heads, K=d // heads, V=d // heads,
                                  scan_backend="sequential")
        self.readout = nn.Linear(d, 2)

    def forward(self, bits: torch.Tensor) -> torch.Tensor:
        x = self.embed(bits)
        return self.readout(x + self.layer(x))


def batch(n: int, length: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    bits = torch.randint(0, 2, (n, length), generator=gen)
    return bits, torch.cumsum(bits, dim=1) % 2


@torch.no_grad()
def accuracy(model: nn.Module, length: int, skip: int, gen: torch.Generator, n: int = 512) -> tuple[float, float]:
    bits, labels = batch(n, length, gen)
    right = model(bits).argmax(-1) == labels
    return right[:, skip:].float().mean().item(), right[:, -1].float().mean().item()


def run(neg: bool, seed: int, args) -> dict[str, float]:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(1000 + seed)
    model = ParityModel(neg, args.d, args.heads, args.model, args.states)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.1)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(args.steps):
        bits, labels = batch(args.batch, args.train_len, gen)
        loss = loss_fn(model(bits).reshape(-1, 2), labels.reshape(-1))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
    model.eval()
    row = {"loss": loss.item(), "train": accuracy(model, args.train_len, 0, gen)[0]}
    for length in args.test_lens:
        row[f"T={length}"], row[f"last@{length}"] = accuracy(model, length, args.train_len, gen)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a smoke run: few steps, one seed")
    p.add_argument("--model", choices=["deltanet", "mamba"], default="deltanet")
    p.add_argument("--states", type=int, default=8, help="N, the Mamba state size per channel")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--d", type=int, default=32)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--train-len", type=int, default=16)
    p.add_argument("--test-lens", type=int, nargs="+", default=[32, 64, 128])
    p.add_argument("--settings", choices=["both", "neg", "pos"], default="both")
    args = p.parse_args()
    if args.quick:
        args.steps, args.seeds, args.test_lens = 20, [0], [32]
    torch.set_num_threads(1)
    settings = {"both": [True, False], "neg": [True], "pos": [False]}[args.settings]
    cols = ["train"] + [f"T={n}" for n in args.test_lens] + [f"last@{n}" for n in args.test_lens]
    print(f"# model={args.model} steps={args.steps} batch={args.batch} lr={args.lr} D={args.d} H={args.heads} N={args.states} "
          f"train_len={args.train_len}")
    print("| eigenvalues | seed | " + " | ".join(cols) + " | final loss | time |")
    print("|---|---|" + "---|" * (len(cols) + 2))
    for neg in settings:
        for seed in args.seeds:
            start = time.time()
            row = run(neg, seed, args)
            if args.model == "mamba":
                label = "[−1, 1] (Ā = 2exp(ΔA) − 1)" if neg else "[0, 1] (Ā = exp(ΔA))"
            else:
                label = "[−1, 1] (β = 2σ)" if neg else "[0, 1] (β = σ)"
            cells = " | ".join(f"{row[c]:.3f}" for c in cols)
            print(f"| {label} | {seed} | {cells} | {row['loss']:.3f} | {time.time() - start:.0f} s |", flush=True)


if __name__ == "__main__":
    main()
