"""Speed of test-time fusion, measured side by side in one run.

1. Scoring: one (context, continuation) request through a pack of K random models:
   the sum of the K single-model forward costs, the uniform ensemble, PackLLM-sim and
   PackLLM-opt (paper, K = 5 on an A100: ensemble 0.30 s, PackLLM 0.32 s; aim: PackLLM
   within 5% of the ensemble).
2. Generation: time per generated token with a prompt of 16 and of 512 tokens (the KV cache
   per member should keep the ratio near 1; aim <= 1.5).
3. MinED: building the vocabulary map between two BPE tokenizers of realistic size
   (32k Metaspace x 50k byte-level, trained here with `tokenizers` on a generated corpus).

Models come from transformers configs with random weights (no hub). Examples:

    python benchmarks/fusion_speed.py --size tiny                      # seconds, CPU
    python benchmarks/fusion_speed.py --device cuda --size large --members 5
    python benchmarks/fusion_speed.py --skip-speed --mined             # the MinED build only
"""

from __future__ import annotations

import argparse
import random
import statistics
import string
import time
from typing import Any, Callable

SIZES = {  # hidden, layers, heads, kv heads, vocab
    "tiny": (64, 2, 4, 2, 2000),
    "small": (256, 4, 4, 2, 32000),
    "medium": (1024, 8, 16, 8, 32000),
    "large": (2048, 16, 16, 8, 32000),
}


def synthetic_tokenizer(vocab_size: int) -> Any:
    """A word-level tokenizer with `vocab_size` distinct tokens (ids 0..V-1), EOS = 0."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"</s>": 0, **{f"▁w{i}": i for i in range(1, vocab_size)}}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="</s>"))
    raw.pre_tokenizer = pre_tokenizers.Metaspace()
    raw.decoder = decoders.Metaspace()
    return PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="</s>")


def random_model(size: str, seed: int, device: str, dtype: Any) -> Any:
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    hidden, layers, heads, kv_heads, vocab = SIZES[size]
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=hidden * 4,
                         num_hidden_layers=layers, num_attention_heads=heads,
                         num_key_value_heads=kv_heads, max_position_embeddings=4096,
                         eos_token_id=0, tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).to(device=device, dtype=dtype).eval()
    with torch.no_grad():  # keep random models from stopping generation early on EOS
        model.lm_head.weight[0].fill_(0.0)
    return model


def timed(fn: Callable[[], Any], device: str, repeats: int) -> float:
    """Fastest wall time of `fn` over `repeats` runs after one warm-up (the least disturbed)."""
    import torch

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return min(times)


def speed(args: argparse.Namespace) -> None:
    import torch

    from harness.fusion._options import PackOptions
    from harness.fusion._pack_lm import Member, Pack, PackLM
    from harness.fusion._weights import GreedyGrid, PerplexitySoftmax, Weighting

    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    vocab = SIZES[args.size][4]
    tokenizer = synthetic_tokenizer(vocab)
    members = [Member(f"m{k}", random_model(args.size, k, args.device, dtype), tokenizer)
               for k in range(args.members)]
    pack = Pack(members, args.device)
    lms = {name: PackLM(pack, rule, PackOptions(max_length=4096)) for name, rule in (
        ("ensemble", Weighting()), ("packllm-sim", PerplexitySoftmax()), ("packllm-opt", GreedyGrid()))}
    generator = random.Random(0)
    context = [generator.randrange(1, vocab) for _ in range(args.context)]
    continuation = [generator.randrange(1, vocab) for _ in range(args.continuation)]
    ids = torch.tensor([context + continuation[:-1]], device=args.device)
    params = sum(p.numel() for p in members[0].model.parameters())
    print(f"device {args.device} ({torch.cuda.get_device_name(0) if args.device.startswith('cuda') else 'cpu'}), "
          f"{args.members} x {args.size} Llama ({params / 1e6:.1f}M params each, vocab {vocab}, {dtype}), "
          f"request of {len(context)} + {len(continuation)} tokens")

    @torch.no_grad()
    def singles() -> None:
        for member in members:
            member.model(input_ids=ids).logits.float()

    def score(name: str) -> Callable[[], Any]:
        lm = lms[name]
        # a fresh context each call: the per-context weight cache must not hide the search
        return lambda: (lm._weights_cache.clear(), list(lm._score(0, [(context, continuation)], "context")))

    single = timed(singles, args.device, args.repeats)
    costs = {name: timed(score(name), args.device, args.repeats) for name in lms}
    print(f"scoring  sum of {args.members} single forwards  {single * 1e3:9.2f} ms")
    for name, cost in costs.items():
        print(f"scoring  {name:<28} {cost * 1e3:9.2f} ms   x{cost / single:.3f} of singles"
              f"   x{cost / costs['ensemble']:.3f} of ensemble")

    lm = lms["packllm-sim"]
    per_token = {}
    for position in args.positions:
        prompt = [generator.randrange(1, vocab) for _ in range(position)]
        # paired runs of two decode lengths: their difference cancels the prefill and weight fit
        def decode(count: int) -> Callable[[], Any]:
            return lambda: lm.generate_tokens(0, prompt, count, until=["\n\n\n"])

        decode(args.new_tokens)()
        differences = [timed(decode(2 * args.new_tokens), args.device, 1)
                       - timed(decode(args.new_tokens), args.device, 1) for _ in range(args.repeats)]
        made = len(lm.generate_tokens(0, prompt, 2 * args.new_tokens)[0])
        assert made == 2 * args.new_tokens, f"generation stopped early ({made} tokens)"
        per_token[position] = statistics.median(differences) / args.new_tokens
        print(f"generate prompt {position:4d}: {per_token[position] * 1e3:8.3f} ms per token "
              f"(tokens {args.new_tokens}..{2 * args.new_tokens} after the prompt)")
    first, last = args.positions[0], args.positions[-1]
    print(f"generate per-token ratio position {last} / {first}: {per_token[last] / per_token[first]:.3f}")


def corpus(words: int, seed: int) -> list[str]:
    """Zipf-distributed pseudo-words: enough distinct strings for 50k BPE merges."""
    rng = random.Random(seed)
    syllables = [a + b for a in "bcdfghjklmnprstvwz" for b in "aeiou"] + list(string.ascii_lowercase)
    lexicon = ["".join(rng.choices(syllables, k=rng.randint(1, 4))) for _ in range(120000)]
    weights = [1.0 / (rank + 1) for rank in range(len(lexicon))]
    text = rng.choices(lexicon, weights=weights, k=words)
    return [" ".join(text[i:i + 40]) for i in range(0, len(text), 40)]


def mined(args: argparse.Namespace) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from harness.fusion._alignment import build_map

    lines = corpus(args.corpus_words, 0)
    started = time.perf_counter()
    metaspace = Tokenizer(models.BPE(unk_token="<unk>"))
    metaspace.pre_tokenizer = pre_tokenizers.Metaspace()
    metaspace.train_from_iterator(lines, trainers.BpeTrainer(
        vocab_size=args.mined_vocab[0], special_tokens=["<unk>", "<s>", "</s>"], show_progress=False))
    bytelevel = Tokenizer(models.BPE())
    bytelevel.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bytelevel.train_from_iterator(lines[::2] + corpus(args.corpus_words // 2, 1), trainers.BpeTrainer(
        vocab_size=args.mined_vocab[1], special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    reference = [metaspace.id_to_token(i) or "" for i in range(metaspace.get_vocab_size())]
    expert = [bytelevel.id_to_token(i) or "" for i in range(bytelevel.get_vocab_size())]
    print(f"MinED    tokenizers trained in {time.perf_counter() - started:.1f} s: "
          f"{len(reference)} (Metaspace) x {len(expert)} (byte-level)")
    started = time.perf_counter()
    mapping = build_map(reference, expert, {"eos_token_id": 2}, {"eos_token_id": 0})
    elapsed = time.perf_counter() - started
    print(f"MinED    map built in {elapsed:.2f} s; rules used: {mapping.counts} "
          f"({mapping.counts['edit-distance'] * len(expert) / 1e6:.0f}M pairs without pruning)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--context", type=int, default=480)
    parser.add_argument("--continuation", type=int, default=32)
    parser.add_argument("--positions", type=int, nargs=2, default=[16, 512])
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: its default)")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--mined", action="store_true", help="also time a 32k x 50k MinED map")
    parser.add_argument("--mined-vocab", type=int, nargs=2, default=[32000, 50000])
    parser.add_argument("--corpus-words", type=int, default=3_000_000)
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if not args.skip_speed:
        speed(args)
    if args.mined:
        mined(args)


if __name__ == "__main__":
    main()
