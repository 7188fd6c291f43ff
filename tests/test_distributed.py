"""Compiled specs past one process: FSDP2 (`fully_shard`) trains a compiled module, in-process and
emitted, exactly as one process on the whole batch (DDP is tests/test_ddp.py).

Two gloo processes on the CPU, spawned once for the whole file (a spawn costs an ncd import per
process): each scenario writes its results to a file, and each test compares one scenario with
the same computation done here in one process.
"""
from __future__ import annotations

import datetime
import importlib.util

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

import ncd
from ncd.backends.pytorch.emit import emit_python

WORLD = 2
STACK = """
# two stacked tanh-RNN layers with residuals, read out from the time mean
axis T = 6, D = 4, C = 2
block Layer(x: [T, D]) -> [T, D] {
    param W: [D, D'] init normal(0, 0.5)
    param U: [D', D] init normal(0, 0.5)
    u = (x @[D] W)[D' as D]
    h = scan t over T carry (h: [D] = 0) { h = tanh(u[t] + h[D as D'] @[D'] U)  emit h }
    return x + h
}
block Net(x: [T, D]) -> [C] {
    use layers = Layer × 2
    param V: [D, C] init normal(0, 0.5)
    return mean(layers(x), over = T) @[D] V
}
"""
STEPS, LR, BATCH = 3, 0.1, 8


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return (torch.randn(BATCH, 6, 4, generator=gen, dtype=torch.float64),
            torch.randn(BATCH, 2, generator=gen, dtype=torch.float64))


def fresh_stack(emitted: str | None) -> torch.nn.Module:
    """The same initial weights either way: the emitted module loads the in-process one's."""
    torch.manual_seed(0)
    model = ncd.load(STACK).double()
    if emitted is None:
        return model
    spec = importlib.util.spec_from_file_location("emitted_stack", emitted)
    source = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(source)
    twin = source.Net().double()
    twin.load_state_dict(model.state_dict())
    return twin


def train(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    for _ in range(STEPS):
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()


def fsdp_scenario(rank: int, emitted: str | None) -> dict[str, torch.Tensor]:
    """FSDP2 as its docs use it: each layer its own shard group, then the root; this rank trains
    on its half of the batch; returns the full (unsharded) parameters."""
    mesh = init_device_mesh("cpu", (WORLD,))
    model = fresh_stack(emitted)
    for layer in model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    assert all(isinstance(p, torch.distributed.tensor.DTensor) for p in model.parameters())
    x, y = batch()
    part = slice(rank * BATCH // WORLD, (rank + 1) * BATCH // WORLD)
    train(model, x[part], y[part])
    return {name: value.full_tensor() for name, value in model.state_dict().items()}


def worker(rank: int, rendezvous: str, emitted: str, out: str) -> None:
    torch.set_num_threads(1)  # two workers on a small machine: no oversubscribed thread pools
    # A file rendezvous: no port to race for on a busy CI machine; a short timeout, so a rank
    # that fails leaves the other waiting seconds, not the default half hour.
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=120))
    results = {"fsdp": fsdp_scenario(rank, None), "fsdp_emitted": fsdp_scenario(rank, emitted)}
    if rank == 0:
        torch.save(results, out)
    dist.barrier()  # both ranks finished all collectives before the group is torn down
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def spawned(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("distributed")
    emitted = tmp / "emitted_stack.py"
    emitted.write_text(emit_python(ncd.check(STACK)))
    out = tmp / "results.pt"
    mp.spawn(worker, args=(str(tmp / "rendezvous"), str(emitted), str(out)), nprocs=WORLD, join=True)
    return {"results": torch.load(out), "emitted": str(emitted)}


@pytest.mark.parametrize("scenario", ["fsdp", "fsdp_emitted"])
def test_fully_shard_two_processes_equal_one_process_on_the_whole_batch(spawned, scenario):
    single = fresh_stack(spawned["emitted"] if scenario == "fsdp_emitted" else None)
    before = {name: value.clone() for name, value in single.state_dict().items()}
    train(single, *batch())
    sharded = spawned["results"][scenario]
    assert sharded.keys() == single.state_dict().keys()
    for name, value in single.state_dict().items():
        assert not torch.equal(value, before[name])  # every parameter moved: the comparison is not vacuous
        torch.testing.assert_close(sharded[name], value, rtol=0, atol=1e-12)

