"""Compiled specs past one process: FSDP2 (`fully_shard`) trains a compiled module, in-process and
emitted, exactly as one process on the whole batch (DDP is tests/test_ddp.py); one long sequence
split across ranks, each rank running its segment from the previous rank's final state (the state
interface, docs/language.md "State in and out"), equals the whole sequence on one process:
outputs, final states and every parameter gradient.

Two gloo processes on the CPU, started once for the whole file and forked from this one, so they
inherit its imports (a spawned process would import torch and ncd again, most of this file's
time): each scenario writes its results to a file, and each test compares one scenario with
the same computation done here in one process.
"""
from __future__ import annotations

import datetime
import importlib.util
import time
import warnings

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

import ncd
from ncd.backends.pytorch.emit import emit_python

WORLD = 2
LAYER = """
axis T, D = 4, C = 2
block Layer(x: [T, D]) -> [T, D] {
    param W: [D, D'] init normal(0, 0.5)
    param U: [D', D] init normal(0, 0.5)
    u = (x @[D] W)[D' as D]
    h = scan t over T carry (h: [D] = 0) { h = tanh(u[t] + h[D as D'] @[D'] U)  emit h }
    return x + h
}
"""
STACK = "# two stacked tanh-RNN layers with residuals, read out from the time mean" + LAYER + """
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
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(model, x[part], y[part])
    out = {name: value.full_tensor() for name, value in model.state_dict().items()}
    return out, [str(w.message) for w in caught if "view" in str(w.message)]


def fresh_lstm() -> torch.nn.Module:
    torch.manual_seed(0)
    return ncd.load("lstm", E=4, D=2).double()


def train_last(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    for _ in range(STEPS):
        opt.zero_grad()
        ((model(x)[:, -1] - y) ** 2).mean().backward()
        opt.step()


def fsdp_prebuilt_lstm_scenario(rank: int, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """An LSTM built before init_process_group (in the parent, before the fork) holds its weights
    in torch's layout, which fully_shard refuses; contiguous_parameters() first, then it shards
    and trains as one process does."""
    assert any(not p.is_contiguous() for p in model.parameters())
    mesh = init_device_mesh("cpu", (WORLD,))
    fully_shard(model.contiguous_parameters(), mesh=mesh)
    x, y = batch()
    part = slice(rank * BATCH // WORLD, (rank + 1) * BATCH // WORLD)
    train_last(model, x[part], y[part])
    return {name: value.full_tensor() for name, value in model.state_dict().items()}


# The sequence-split specs: two stacked RNN layers (two states, one per layer) and a GLA layer
# (a matrix state per head: a lifted state), at sizes small enough for a test: spec, sizes, input width.
SPLIT = {
    "stack": ("# two stacked tanh-RNN layers with residuals" + LAYER
              + "block Net(x: [T, D]) -> [T, D] {\n    use layers = Layer × 2\n    return layers(x)\n}\n", {}, 4),
    "gla": ("gla", {"D": 8, "H": 2, "K": 2, "V": 4, "R": 2}, 8),
}
SEGMENT, SPLIT_BATCH = 5, 3  # each rank's share of the sequence; the whole sequence is WORLD * SEGMENT


def split_model(name: str) -> torch.nn.Module:
    spec, sizes, _ = SPLIT[name]
    torch.manual_seed(0)
    return ncd.load(spec, **sizes).double()


def split_data(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole sequence and the weights of a loss that reads every position."""
    width = SPLIT[name][2]
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(SPLIT_BATCH, WORLD * SEGMENT, width, generator=gen, dtype=torch.float64)
    return x, torch.randn(x.shape, generator=gen, dtype=torch.float64)


def send_state(state: dict[str, torch.Tensor], names: list[str], dst: int) -> None:
    """Each state's shape, then its values: the receiver cannot know the lead dims (the batch,
    heads a block is lifted over) from ``state_spec()``, which gives the per-example shape."""
    for name in names:
        value = state[name].detach().contiguous()
        dist.send(torch.tensor([value.dim()]), dst=dst)
        dist.send(torch.tensor(value.shape), dst=dst)
        dist.send(value, dst=dst)


def recv_state(names: list[str], src: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    state = {}
    for name in names:
        rank = torch.empty(1, dtype=torch.int64)
        dist.recv(rank, src=src)
        shape = torch.empty(int(rank), dtype=torch.int64)
        dist.recv(shape, src=src)
        state[name] = torch.empty(shape.tolist(), dtype=dtype)
        dist.recv(state[name], src=src)
    return state


def split_scenario(rank: int, name: str) -> dict[str, torch.Tensor]:
    """This rank's segment from the previous rank's final state (received), its final state sent
    on; backward, the gradient of the state this rank started from goes back to the previous rank,
    which runs its backward through the state it sent. Parameter gradients are then summed over
    the ranks: the gradient of the whole sequence's loss."""
    model = split_model(name)
    x, w = split_data(name)
    part = slice(rank * SEGMENT, (rank + 1) * SEGMENT)
    names = list(model.state_spec())
    start = None
    if rank > 0:
        start = recv_state(names, rank - 1, torch.float64)
        for value in start.values():
            value.requires_grad_()
    y, final = model(x[:, part], initial_state=start, return_state=True)
    loss = (y * w[:, part]).sum()
    if rank < WORLD - 1:
        send_state(final, names, rank + 1)
        grads = [torch.empty_like(final[name]) for name in names]
        for grad in grads:
            dist.recv(grad, src=rank + 1)
        torch.autograd.backward([loss, *(final[name] for name in names)], [torch.ones_like(loss), *grads])
    else:
        loss.backward()
    if start is not None:
        for name in names:
            dist.send(start[name].grad.contiguous(), dst=rank - 1)
    out = {f"y{rank}": y.detach()}
    out.update({f"final{rank}.{k}": v.detach() for k, v in final.items()})
    for param_name, param in model.named_parameters():
        dist.all_reduce(param.grad)
        out[f"grad.{param_name}"] = param.grad
    return out


def worker(rank: int, rendezvous: str, emitted: str, out: str, prebuilt: torch.nn.Module) -> None:
    torch.set_num_threads(1)  # two workers on a small machine: no oversubscribed thread pools
    # A file rendezvous: no port to race for on a busy CI machine; a short timeout, so a rank
    # that fails leaves the other waiting seconds, not the default half hour.
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=120))
    results: dict = {}
    for scenario, source in (("fsdp", None), ("fsdp_emitted", emitted)):
        results[scenario], results[f"{scenario}_view_warnings"] = fsdp_scenario(rank, source)
    results["fsdp_prebuilt_lstm"] = fsdp_prebuilt_lstm_scenario(rank, prebuilt)
    results.update({f"split_{name}": split_scenario(rank, name) for name in SPLIT})
    torch.save(results, f"{out}.{rank}")
    dist.barrier()  # both ranks finished all collectives before the group is torn down
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def spawned(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("distributed")
    emitted = tmp / "emitted_stack.py"
    emitted.write_text(emit_python(ncd.check(STACK)))
    out = tmp / "results.pt"
    prebuilt = fresh_lstm()  # built here, before any process group: forked into each rank as built
    ranks = mp.start_processes(worker, args=(str(tmp / "rendezvous"), str(emitted), str(out), prebuilt), nprocs=WORLD,
                               join=False, start_method="fork")
    deadline = time.monotonic() + 600  # a wedged rank fails the tests instead of hanging them
    while not ranks.join(timeout=5):
        if time.monotonic() > deadline:
            for process in ranks.processes:
                process.kill()
            pytest.fail("the distributed workers did not finish in 600 s")
    return {"results": torch.load(f"{out}.0"), "last": torch.load(f"{out}.{WORLD - 1}"), "emitted": str(emitted)}


@pytest.mark.parametrize("scenario", ["fsdp", "fsdp_emitted"])
def test_fully_shard_two_processes_equal_one_process_on_the_whole_batch(spawned, scenario):
    single = fresh_stack(spawned["emitted"] if scenario == "fsdp_emitted" else None)
    before = {name: value.clone() for name, value in single.state_dict().items()}
    train(single, *batch())
    sharded = spawned["results"][scenario]
    assert sharded.keys() == single.state_dict().keys()
    # the module returns tensors of its own under FSDP2, not views whose in-place use would drop its hooks
    assert spawned["results"][f"{scenario}_view_warnings"] == spawned["last"][f"{scenario}_view_warnings"] == []
    for name, value in single.state_dict().items():
        assert not torch.equal(value, before[name])  # every parameter moved: the comparison is not vacuous
        torch.testing.assert_close(sharded[name], value, rtol=0, atol=1e-12)


def test_an_lstm_built_before_the_process_group_shards_after_contiguous_parameters(spawned):
    single = fresh_lstm()
    before = {name: value.clone() for name, value in single.state_dict().items()}
    x, y = batch()
    train_last(single, x, y)
    sharded = spawned["results"]["fsdp_prebuilt_lstm"]
    assert sharded.keys() == single.state_dict().keys()
    for name, value in single.state_dict().items():
        assert not torch.equal(value, before[name])
        torch.testing.assert_close(sharded[name], value, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", list(SPLIT))
def test_a_sequence_split_across_ranks_by_carried_state_equals_the_whole_sequence(spawned, name):
    model = split_model(name)
    x, w = split_data(name)
    y, final = model(x, return_state=True)
    (y * w).sum().backward()
    first, last = spawned["results"][f"split_{name}"], spawned["last"][f"split_{name}"]
    pieces = [first["y0"], last[f"y{WORLD - 1}"]]
    assert WORLD == 2 and len(final) == len(model.state_spec()) > 0
    torch.testing.assert_close(torch.cat(pieces, 1), y.detach(), rtol=0, atol=1e-10)
    for key, value in final.items():
        torch.testing.assert_close(last[f"final{WORLD - 1}.{key}"], value.detach(), rtol=0, atol=1e-10)
    # Rank 0 stopped mid-sequence: its final state is the whole run's carry there, not the end.
    mid = split_model(name)(x[:, :SEGMENT], return_state=True)[1]
    for key, value in mid.items():
        torch.testing.assert_close(first[f"final0.{key}"], value.detach(), rtol=0, atol=1e-10)
    for param_name, param in model.named_parameters():
        assert param.grad.abs().max() > 0
        for ranks in (first, last):  # all-reduced: every rank holds the whole sequence's gradient
            torch.testing.assert_close(ranks[f"grad.{param_name}"], param.grad, rtol=0, atol=1e-10)
