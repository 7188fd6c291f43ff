"""Networks behave as hash encoders (Lei et al. 2021): activation-code redundancy and k-NN accuracy on codes, by width.

The paper's observation: as a ReLU network gets wider, the binary activation codes of inputs
become unique (the redundancy ratio, the share of inputs whose code another input shares, falls
to 0) and classify the data well (k-NN on the codes approaches the network's own accuracy).
Here, small: `hash_mlp` (three hidden layers of width F) on a synthetic 10-class task in 16
dimensions (two Gaussian clusters of std 1.5 per class, balanced), trained briefly at each width; codes from the
spec's `pre` taps (ncd.training.codes). Redundancy on the 2000 training inputs, 1-NN accuracy of
test codes against training codes (Hamming distance), at initialisation and after training.

    .venv/bin/python examples/hash_codes.py          # the table in docs/papers.md
    .venv/bin/python examples/hash_codes.py --quick  # a smoke run, seconds
"""
from __future__ import annotations

import argparse
import time

import torch
from torch import nn

import ncd
from ncd.training.codes import activation_codes, knn_accuracy, redundancy_ratio

E, D = 16, 10


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--widths", type=int, nargs="+", default=[2, 4, 8, 16, 32, 64, 128])
    p.add_argument("--steps", type=int, default=300)
    args = p.parse_args()
    if args.quick:
        args.steps, args.widths = 10, [4, 32]
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    centres = torch.randn(2 * D, E, generator=gen)

    def sample(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        cluster = torch.randint(0, 2 * D, (n,), generator=gen)
        return centres[cluster] + 1.5 * torch.randn(n, E, generator=gen), cluster % D
    (xtr, ytr), (xte, yte) = sample(2000), sample(1000)
    print(f"# seed={args.seed} steps={args.steps} (Adam 1e-3, batch 128); 2000 train / 1000 test inputs")
    print("| width F | code bits | redundancy (init) | 1-NN acc (init) | redundancy (trained) | 1-NN acc (trained) | net test acc |")
    print("|---|---|---|---|---|---|---|")
    start = time.time()
    for width in args.widths:
        m = ncd.load("hash_mlp", E=E, F=width, D=D)
        init = (redundancy_ratio(activation_codes(m, xtr)),
                knn_accuracy(activation_codes(m, xtr), ytr, activation_codes(m, xte), yte))
        opt = torch.optim.Adam(m.parameters(), lr=1e-3)
        for _ in range(args.steps):
            idx = torch.randint(0, xtr.shape[0], (128,), generator=gen)
            loss = nn.functional.cross_entropy(m(xtr[idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        ctr, cte = activation_codes(m, xtr), activation_codes(m, xte)
        with torch.no_grad():
            acc = (m(xte).argmax(-1) == yte).float().mean().item()
        print(f"| {width} | {ctr.shape[1]} | {init[0]:.3f} | {init[1]:.3f} | {redundancy_ratio(ctr):.3f} "
              f"| {knn_accuracy(ctr, ytr, cte, yte):.3f} | {acc:.3f} |", flush=True)
    print(f"# {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
