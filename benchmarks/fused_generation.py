"""Fused generation against its members generating one after another (benchmark 2).

PackLLM over K members decodes B prompts at once (left padding, one KV cache per member).
Two baselines, each running the K members one after the other at the same batch size:
lm-eval's HFLM (what the `single` method runs), and the same batched decoder over a pack of
one member (the pure cost of fusing: K forwards per step either way). Every row decodes
exactly `--tokens` new tokens (no stop string; the budget ends each row). Aim: fused / sum
of singles <= 1.1.

    python benchmarks/fused_generation.py                       # CPU, small random Llamas
    python benchmarks/fused_generation.py --device cuda --size 1b --members 3 --batch 16
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

SIZES = {"small": (256, 4, 4, 2), "medium": (768, 8, 12, 4), "1b": (2048, 16, 16, 8)}


def members(count: int, size: str, device: str, dtype: Any, folder: Path) -> list[tuple[Any, Any]]:
    """`count` random Llamas of one shape sharing the zoo's tokenizer (one family)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from harness.models.loading import ModelRef

    tokenizer = AutoTokenizer.from_pretrained(ModelRef("harness-zoo/tiny-llama").location())
    hidden, layers, heads, kv_heads = SIZES[size]
    loaded = []
    for seed in range(count):
        torch.manual_seed(seed)
        config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden,
                             intermediate_size=hidden * 4, num_hidden_layers=layers,
                             num_attention_heads=heads, num_key_value_heads=kv_heads,
                             max_position_embeddings=4096, eos_token_id=tokenizer.eos_token_id,
                             bos_token_id=tokenizer.bos_token_id,
                             pad_token_id=tokenizer.pad_token_id)
        model = LlamaForCausalLM(config).to(device=device, dtype=dtype).eval()
        loaded.append((model, tokenizer))
    return loaded


def requests(count: int, tokens: int) -> list[Any]:
    from lm_eval.api.instance import Instance

    words = "the quick brown fox jumps over a lazy dog near the river bank today".split()
    prompts = [" ".join(words[i % 7:] + words[:i % 5 + 3]) for i in range(count)]
    return [Instance("generate_until", {}, (p, {"until": [], "max_gen_toks": tokens}), i)
            for i, p in enumerate(prompts)]


def timed(run: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=2)
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import torch
    from lm_eval.models.huggingface import HFLM

    from harness.fusion._options import PackOptions
    from harness.fusion._pack_lm import Member, Pack, PackLM
    from harness.fusion._weights import PerplexitySoftmax

    torch.set_grad_enabled(False)
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    with tempfile.TemporaryDirectory() as scratch:
        pack_members = members(args.members, args.size, args.device, dtype, Path(scratch))
    work = requests(args.prompts, args.tokens)
    singles = [HFLM(pretrained=m, tokenizer=t, batch_size=args.batch, device=args.device)
               for m, t in pack_members]
    pack = PackLM(Pack([Member(f"m{i}", m, t) for i, (m, t) in enumerate(pack_members)],
                       args.device), PerplexitySoftmax(), PackOptions(), batch_size=args.batch)

    alone = [PackLM(Pack([Member(f"m{i}", m, t)], args.device), PerplexitySoftmax(),
                    PackOptions(), batch_size=args.batch) for i, (m, t) in enumerate(pack_members)]

    def run_singles() -> None:
        for lm in singles:
            lm.generate_until(work, disable_tqdm=True)

    def run_alone() -> None:
        for lm in alone:
            lm.generate_until(work)

    def run_pack() -> None:
        pack.generate_until(work)

    for lm in singles:  # warm-up
        lm.generate_until(work[:2], disable_tqdm=True)
    pack.generate_until(work[:2])
    for lm in alone:
        lm.generate_until(work[:2])
    single_s = timed(run_singles, args.repeats)
    alone_s = timed(run_alone, args.repeats)
    fused_s = timed(run_pack, args.repeats)
    print(f"{args.members} members ({args.size}), {args.prompts} prompts x {args.tokens} tokens, "
          f"batch {args.batch}, {args.device}, median of {args.repeats}")
    print(f"  members one after another, HFLM (`single`):       {single_s:8.3f} s")
    print(f"  members one after another, our decoder (pack of 1): {alone_s:8.3f} s")
    print(f"  PackLLM-sim fused, batched:                      {fused_s:8.3f} s")
    print(f"  fused / HFLM singles:                            {fused_s / single_s:8.3f}  (aim <= 1.1)")
    print(f"  fused / our-decoder singles:                     {fused_s / alone_s:8.3f}  (aim <= 1.1)")


if __name__ == "__main__":
    main()
