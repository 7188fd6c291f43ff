#!/usr/bin/env python3
"""TSP with 5 cities: a pointer network (specs/pointer_net.ncd) trained on brute-force optimal tours.

Cities are uniform in the unit square; each instance's label is its optimal tour (brute force over
the 4! orders that start at city 0, the direction with the smaller second city). The teacher-forced
entry is trained with the tours' negative log-likelihood; the greedy entry (masked arg-max, the
same weights) is evaluated on fresh instances beside the optimum. Vinyals et al. (2015), Table 2,
list 2.12 for the optimal mean tour length at n = 5.

Usage: python examples/tsp5_pointer_net.py [--steps 400] [--hidden 64] [--seed 0]
       python examples/tsp5_pointer_net.py --quick  # a smoke run, seconds
"""
from __future__ import annotations

import argparse
import itertools
import time

import torch

import ncd


def tour_lengths(cities: torch.Tensor, tours: torch.Tensor) -> torch.Tensor:
    """Closed-tour lengths: cities [B, n, 2], tours [B, n] (orders of city indices)."""
    ordered = torch.gather(cities, 1, tours[..., None].expand(-1, -1, 2))
    return (ordered - ordered.roll(-1, dims=1)).norm(dim=-1).sum(-1)


def optimal_tours(cities: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Brute force: every order starting at city 0; ties in direction broken by the second city."""
    n = cities.shape[1]
    orders = torch.tensor([(0, *p) for p in itertools.permutations(range(1, n)) if p[0] < p[-1]])
    lengths = torch.stack([tour_lengths(cities, o.expand(cities.shape[0], -1)) for o in orders], dim=1)
    best = lengths.argmin(1)
    return orders[best], lengths.gather(1, best[:, None])[:, 0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test", type=int, default=2000, help="test instances")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 4 steps, small sizes")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.hidden, args.batch, args.test = 4, 16, 16, 64
    torch.manual_seed(args.seed)
    torch.set_num_threads(2)
    n = 5
    model = ncd.load("pointer_net", T=n, D=args.hidden, K=args.hidden)
    greedy = model.entry("Greedy")                                   # the same Parameter tensors
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    test = torch.rand(args.test, n, 2)
    _, test_optimum = optimal_tours(test)
    start = time.time()
    for step in range(1, args.steps + 1):
        cities = torch.rand(args.batch, n, 2)
        tours, _ = optimal_tours(cities)
        logp = model(cities, tours)                                  # [B, T, T']
        loss = -logp.gather(-1, tours[..., None]).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 2.0)
        opt.step()
        if step % 100 == 0 or step == args.steps:
            with torch.no_grad():
                _, tour = greedy(test)
            valid = all(sorted(t.tolist()) == list(range(n)) for t in tour)
            print(f"step {step:5d}  nll {loss.item():.3f}  greedy {tour_lengths(test, tour).mean():.3f}  "
                  f"optimal {test_optimum.mean():.3f}  permutations {valid}  {time.time() - start:.0f} s")
    with torch.no_grad():
        _, tour = greedy(test)
    greedy_len = tour_lengths(test, tour)
    print(f"\n| n | test instances | optimal mean length | greedy pointer net | gap | exactly optimal | steps | seconds |")
    print(f"|---|---|---|---|---|---|---|---|")
    print(f"| {n} | {len(test)} | {test_optimum.mean():.3f} | {greedy_len.mean():.3f} | "
          f"{100 * (greedy_len.mean() / test_optimum.mean() - 1):.1f}% | "
          f"{100 * (greedy_len - test_optimum < 1e-5).float().mean():.1f}% | {args.steps} | {time.time() - start:.0f} |")


if __name__ == "__main__":
    main()
