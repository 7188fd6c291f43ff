"""AP (Liu et al. 2022): the dynamic dead-neuron rate of a pruned ReLU MLP after fine-tuning, by sparsity.

The paper's observation: the more a network is pruned, the smaller its dynamic dead-neuron rate
(DNR: the share of (unit, sample) pairs with pre-activation ≤ 0) becomes during optimisation.
Here, small: `ap_mlp` (E=32 → 128 → 128 → 10) is trained on a synthetic 10-class task (two
Gaussian clusters per class), then for each sparsity every layer is magnitude-pruned
(ncd.training.masks.magnitude_mask into the spec's mask buffers) and fine-tuned; the DNR is read
from the spec's `pre` taps (ncd.training.dead_neurons.DeadNeuronRate) on the test set. The `AP`
columns fine-tune again from the same pruned weights with selective activation switched on for
the 10 % of units dead most often (their S buffer = 1, learned slope), as the spec reads AP.

    .venv/bin/python examples/ap_dead_neurons.py          # the table in docs/papers.md
    .venv/bin/python examples/ap_dead_neurons.py --quick  # a smoke run, seconds
"""
from __future__ import annotations

import argparse
import copy
import time

import torch
from torch import nn

import ncd
from ncd.training.dead_neurons import DeadNeuronRate, select_units
from ncd.training.masks import magnitude_mask

E, F, D = 32, 128, 10


def task(n: int, gen: torch.Generator, centres: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Balanced classes: two Gaussian clusters (std 1.5) per class around fixed random centres."""
    cluster = torch.randint(0, centres.shape[0], (n,), generator=gen)
    return centres[cluster] + 1.5 * torch.randn(n, E, generator=gen), cluster % D


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float, gen: torch.Generator) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (128,), generator=gen)
        loss = loss_fn(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float, DeadNeuronRate]:
    model.eval()
    with DeadNeuronRate(model) as dnr:
        acc = (model(x).argmax(-1) == y).float().mean().item()
    return acc, dnr.overall(), dnr


def prune(model: nn.Module, sparsity: float) -> None:
    with torch.no_grad():
        for layer in (model.l1, model.l2, model.out):
            layer.M.copy_(magnitude_mask(layer.W, sparsity))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=400, help="dense training steps")
    p.add_argument("--finetune", type=int, default=200, help="fine-tuning steps after pruning")
    p.add_argument("--sparsities", type=float, nargs="+", default=[0.0, 0.5, 0.8, 0.95])
    p.add_argument("--ap-share", type=float, default=0.1)
    args = p.parse_args()
    if args.quick:
        args.steps, args.finetune = 30, 20
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    centres = torch.randn(2 * D, E, generator=gen)
    xtr, ytr = task(8192, gen, centres)
    xte, yte = task(2048, gen, centres)
    dense = ncd.load("ap_mlp", E=E, F=F, D=D)
    start = time.time()
    train(dense, xtr, ytr, args.steps, 1e-3, gen)
    acc, rate, _ = evaluate(dense, xte, yte)
    print(f"# seed={args.seed} dense steps={args.steps} fine-tune steps={args.finetune} "
          f"dense test acc={acc:.3f} DNR={rate:.3f}")
    print("| sparsity | test acc | DNR | DNR l1 | DNR l2 | AP test acc | AP DNR |")
    print("|---|---|---|---|---|---|---|")
    for s in args.sparsities:
        pruned = copy.deepcopy(dense)
        prune(pruned, s)
        base = copy.deepcopy(pruned)
        train(pruned, xtr, ytr, args.finetune, 1e-3, gen)
        acc, rate, dnr = evaluate(pruned, xte, yte)
        rates = dnr.rates()
        ap = base
        _, _, before = evaluate(ap, xtr[:2048], ytr[:2048])
        units = before.unit_rates()
        with torch.no_grad():
            ap.l1.S.copy_(select_units(units["l1.taps.pre"], args.ap_share))
            ap.l2.S.copy_(select_units(units["l2.taps.pre"], args.ap_share))
        train(ap, xtr, ytr, args.finetune, 1e-3, gen)
        ap_acc, ap_rate, _ = evaluate(ap, xte, yte)
        print(f"| {s:.0%} | {acc:.3f} | {rate:.3f} | {rates['l1.taps.pre']:.3f} | {rates['l2.taps.pre']:.3f} "
              f"| {ap_acc:.3f} | {ap_rate:.3f} |", flush=True)
    print(f"# {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
