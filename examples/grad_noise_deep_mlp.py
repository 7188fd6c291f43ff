"""Adding gradient noise (Neelakantan et al. 2015): the 20-layer, 50-unit ReLU MLP trained with and without annealed noise.

The paper's deep-MLP experiment: with a poor initialisation the 20-layer network barely trains,
and adding g ← g + N(0, η/(1 + t)^0.55) to every gradient helps it train. Here, small: `deep_mlp`
on a synthetic 10-class task in 16 dimensions (two Gaussian clusters of std 1.5 per class, balanced), the paper's
"simple" initialisation N(0, 0.1²) for every weight and zero biases, Adam (lr 1e-3, batch 128),
noise from ncd.training.grad_noise.GradientNoise with η ∈ {0, 0.01}, several seeds.

    .venv/bin/python examples/grad_noise_deep_mlp.py          # the table in docs/papers.md
    .venv/bin/python examples/grad_noise_deep_mlp.py --quick  # a smoke run, seconds
"""
from __future__ import annotations

import argparse
import time

import torch
from torch import nn

import ncd
from ncd.training.grad_noise import GradientNoise

E, D = 16, 10


def run(eta: float, seed: int, steps: int, data) -> tuple[float, float]:
    xtr, ytr, xte, yte = data
    torch.manual_seed(seed)
    m = ncd.load("deep_mlp", E=E, F=50, D=D)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "W" in name.split(".")[-1]:
                p.normal_(0, 0.1)
            else:
                p.zero_()
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    noise = GradientNoise(m.parameters(), eta=eta, generator=torch.Generator().manual_seed(10_000 + seed))
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, xtr.shape[0], (128,), generator=gen)
        loss = nn.functional.cross_entropy(m(xtr[idx]), ytr[idx])
        opt.zero_grad()
        loss.backward()
        if eta > 0:
            noise.step()
        opt.step()
    with torch.no_grad():
        train_loss = nn.functional.cross_entropy(m(xtr), ytr).item()
        acc = (m(xte).argmax(-1) == yte).float().mean().item()
    return train_loss, acc


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--etas", type=float, nargs="+", default=[0.0, 0.01])
    p.add_argument("--steps", type=int, default=400)
    args = p.parse_args()
    if args.quick:
        args.steps, args.seeds = 10, [0]
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(123)
    torch.manual_seed(123)
    centres = torch.randn(2 * D, E, generator=gen)

    def sample(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        cluster = torch.randint(0, 2 * D, (n,), generator=gen)
        return centres[cluster] + 1.5 * torch.randn(n, E, generator=gen), cluster % D
    (xtr, ytr), (xte, yte) = sample(4096), sample(2048)
    data = (xtr, ytr, xte, yte)
    print(f"# steps={args.steps}, init N(0, 0.1²), Adam 1e-3, batch 128; chance = {1 / D:.2f}")
    print("| η | seed | final train loss | test acc | time |")
    print("|---|---|---|---|---|")
    for eta in args.etas:
        for seed in args.seeds:
            start = time.time()
            loss, acc = run(eta, seed, args.steps, data)
            print(f"| {eta:g} | {seed} | {loss:.3f} | {acc:.3f} | {time.time() - start:.0f} s |", flush=True)


if __name__ == "__main__":
    main()
