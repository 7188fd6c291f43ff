"""A compiled spec trains under DistributedDataParallel exactly as one process on the whole batch."""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

import ncd

SPEC = """
# a small recurrent classifier: a scan, a contraction and a readout
axis T, E = 3, D = 5, C = 2
block Net(x: [T, E]) -> [C] {
    param W: [E, D] init normal(0, 0.5)
    param U: [D', D] init normal(0, 0.5)
    param V: [D, C] init normal(0, 0.5)
    h = scan t over T carry (h: [D] = 0) { h = tanh(x[t] @[E] W + h[D as D'] @[D'] U)  emit h }
    return mean(h, over = T) @[D] V
}
"""
STEPS, LR = 3, 0.1


def data():
    gen = torch.Generator().manual_seed(1)
    return torch.randn(8, 6, 3, generator=gen, dtype=torch.float64), torch.randn(8, 2, generator=gen,
                                                                                 dtype=torch.float64)


def fresh_model():
    torch.manual_seed(0)
    return ncd.load(SPEC).double()


def train(model, x, y):
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    for _ in range(STEPS):
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()


def worker(rank: int, world: int, rendezvous: str, out: str) -> None:
    torch.set_num_threads(1)  # two workers on a 2-core machine: no oversubscribed thread pools
    # A file rendezvous: no port to race for on a busy CI machine.
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    x, y = data()
    shard = slice(rank * 4, rank * 4 + 4)
    model = DistributedDataParallel(fresh_model())
    train(model, x[shard], y[shard])
    if rank == 0:
        torch.save(model.module.state_dict(), out)
    del model
    dist.barrier()  # both ranks finished all collectives before the group is torn down
    dist.destroy_process_group()


def test_ddp_two_processes_equal_one_process_on_the_whole_batch(tmp_path):
    out = str(tmp_path / "ddp.pt")
    mp.spawn(worker, args=(2, str(tmp_path / "rendezvous"), out), nprocs=2, join=True)
    single = fresh_model()
    train(single, *data())
    ddp_state = torch.load(out)
    for name, value in single.state_dict().items():
        torch.testing.assert_close(ddp_state[name], value, rtol=0, atol=1e-12)
