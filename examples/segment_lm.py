"""A character language model trained in segments with carried state, then sampled with the step module.

The model is one spec (below): an embedding, the library's `GLA` layer (specs/gla.ncd: gated
linear attention, a matrix state per head) and a ReLU MLP, pre-norm with residuals, and a
read-out to the characters. The text is generated here: sentences of a small grammar ("the old
man looked at the red ball."), one long stream per batch row.

Training is truncated back-propagation through time: each stream runs in segments of --segment
characters, each segment starting from the previous segment's final state
(`model(ids, initial_state=state, return_state=True)`, docs/language.md "State in and out"),
detached so the gradient stays within the segment. Evaluation reports the held-out loss (bits
per character) with the state carried across segments and with every segment started afresh:
the carried state is the context that crosses segment boundaries.

Sampling prefills a prompt with the full module (its final state), then advances one character
at a time with the step module (`model.step_module()`, the same weights), which carries the same
named states; the last line checks the step module's logits against the full module run over
the whole sampled text.

    .venv/bin/python examples/segment_lm.py            # a few minutes on a CPU
    .venv/bin/python examples/segment_lm.py --quick    # a smoke run, seconds
"""
from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F

import ncd

SPEC = """
# A character language model: an embedding, one GLA layer and a ReLU MLP (pre-norm, residual), a read-out
import GLA from gla
axis T, A, D = 32, H = 2, K = 8, V = 16, R = 8, F = 64

block CharLM(ids: [T] int) -> [T, A] {
    param E: [A, D] init normal(0, 1)
    param W_up: [D, F] init normal(0, D^-0.5)
    param W_down: [F, D] init normal(0, F^-0.5)
    param W_out: [D, A] init normal(0, D^-0.5)
    use mix = GLA
    x = E[A = ids]
    h = x + mix(rmsnorm(x, over = D, eps = 1e-5))
    z = h + relu(rmsnorm(h, over = D, eps = 1e-5) @[D] W_up) @[F] W_down
    return rmsnorm(z, over = D, eps = 1e-5) @[D] W_out
}
"""
SUBJECTS = ["the cat", "a dog", "my friend", "the old man", "she", "he", "the children"]
VERBS = ["sat on", "looked at", "ran to", "jumped over", "found", "painted"]
OBJECTS = ["the mat", "a tree", "the house", "the red ball", "the river", "a small boat"]


def sentences(n: int, gen: torch.Generator) -> str:
    """``n`` sentences of the grammar, a space between them."""
    def pick(words: list[str]) -> str:
        return words[int(torch.randint(len(words), (), generator=gen))]
    return " ".join(f"{pick(SUBJECTS)} {pick(VERBS)} {pick(OBJECTS)}." for _ in range(n))


ALPHABET = sorted(set("".join(SUBJECTS + VERBS + OBJECTS) + " ."))
INDEX = {c: i for i, c in enumerate(ALPHABET)}


def encode(text: str) -> torch.Tensor:
    return torch.tensor([INDEX[c] for c in text])


def decode(ids: torch.Tensor) -> str:
    return "".join(ALPHABET[int(i)] for i in ids)


def streams(rows: int, length: int, gen: torch.Generator) -> torch.Tensor:
    """``[rows, length + 1]`` character ids: each row one stream of sentences (inputs and the next
    character as targets)."""
    out = []
    for _ in range(rows):
        text = sentences(length // 20 + 2, gen)
        start = int(torch.randint(20, (), generator=gen))  # streams start mid-sentence too
        out.append(encode(text[start:start + length + 1]))
    return torch.stack(out)


def run_segments(model: torch.nn.Module, data: torch.Tensor, segment: int, carry: bool,
                 opt: torch.optim.Optimizer | None = None) -> float:
    """Mean next-character loss (nats) over ``data``'s streams, segment by segment, each from the
    previous one's final state (``carry``) or from the spec's initial state; with ``opt``, one
    optimiser step per segment (truncated back-propagation: the carried state is detached)."""
    state, total, count = None, 0.0, 0
    for start in range(0, data.shape[1] - 1, segment):
        ids, target = data[:, start:start + segment], data[:, start + 1:start + segment + 1]
        ids = ids[:, :target.shape[1]]
        logits, final = model(ids, initial_state=state if carry else None, return_state=True)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))
        if opt is not None:
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        state = {name: value.detach() for name, value in final.items()}
        total, count = total + loss.item() * target.numel(), count + target.numel()
    return total / count


@torch.no_grad()
def sample(model: torch.nn.Module, prompt: str, length: int, gen: torch.Generator,
           temperature: float) -> tuple[str, float]:
    """The prompt prefilled with the full module, then ``length`` characters drawn one at a time
    with the step module from the carried state; returns the text and the largest difference
    between the step module's logits and the full module's over the whole text."""
    step = model.step_module()
    ids = encode(prompt)[None]
    logits, state = model(ids, return_state=True)
    last, stepped = logits[:, -1], []
    for _ in range(length):
        probs = torch.softmax(last / temperature, dim=-1)
        nxt = torch.multinomial(probs, 1, generator=gen)[:, 0]
        ids = torch.cat([ids, nxt[:, None]], 1)
        last, state = step(nxt, state=state)
        stepped.append(last)
    whole = model(ids)[:, len(prompt):]  # the logits after each drawn character, all at once
    return decode(ids[0]), (torch.stack(stepped, 1) - whole).abs().max().item()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=40, help="passes over a fresh batch of streams")
    p.add_argument("--rows", type=int, default=16, help="streams per batch")
    p.add_argument("--length", type=int, default=256, help="characters per stream")
    p.add_argument("--segment", type=int, default=32, help="characters per segment")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    if args.quick:
        args.steps, args.rows, args.length, args.segment = 2, 2, 32, 16
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    model = ncd.load(SPEC, A=len(ALPHABET))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    held_out = streams(args.rows, args.length, torch.Generator().manual_seed(args.seed + 1))
    began = time.perf_counter()
    for n in range(1, args.steps + 1):
        loss = run_segments(model, streams(args.rows, args.length, gen), args.segment, True, opt)
        if n == 1 or n % max(1, args.steps // 6) == 0 or n == args.steps:
            print(f"pass {n:3d}  train {loss / math.log(2):.3f} bits/char  ({time.perf_counter() - began:.0f} s)")
    with torch.no_grad():
        carried = run_segments(model, held_out, args.segment, True)
        fresh = run_segments(model, held_out, args.segment, False)
    print(f"held out: {carried / math.log(2):.3f} bits/char with the state carried across segments, "
          f"{fresh / math.log(2):.3f} with each segment from the initial state "
          f"(uniform: {math.log2(len(ALPHABET)):.3f})")
    text, gap = sample(model, "the ", 40 if args.quick else 160, gen, temperature=0.7)
    print(f"sample: {text!r}")
    print(f"step module vs full module over the sample: max |logit difference| {gap:.2e}")


if __name__ == "__main__":
    main()
