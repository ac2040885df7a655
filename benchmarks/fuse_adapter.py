"""Speed of FUSE, measured side by side in one run.

1. Fitting the adapter T_k = X_A^+ * X_B for k = 1..K over N dictionary words per count
   (paper: 4 min 22 s on a workstation for 16,384 words; gpt2-medium d_A = 1024, CLIP
   ViT-B/32 text d_B = 512): our batched real-FFT fit (k // 2 + 1 Fourier slices, the real
   ones inverted in real arithmetic, the complex ones in one batched call, the product formed
   in the Fourier domain) against a naive per-slice loop (full FFT, one complex
   pseudo-inverse per slice in a Python loop, back to the time domain, then the t-product as
   the circular convolution of slices). Random tables of the real shapes; each side runs
   `--repeats` times, interleaved, and the fastest run counts (the machine may be shared).
2. One captioning step (AutoDAN, beam 4, 256 candidates per beam) on the tiny zoo pair
   (tiny-gpt2 + tiny-clip): FUSE-guided against LM-logits-only guidance, and the share of
   the FUSE step spent computing the gradient.

    python benchmarks/fuse_adapter.py                       # 16,384 words, CPU
    python benchmarks/fuse_adapter.py --device cuda
    python benchmarks/fuse_adapter.py --words 2048 --skip-caption
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch


def naive_fit(x_a: torch.Tensor, x_b: torch.Tensor) -> torch.Tensor:
    from harness.fuse._tensor import t_product_circular

    k = x_a.shape[-1]
    spectrum = torch.fft.fft(x_a, dim=-1)
    inverse = torch.stack([torch.linalg.pinv(spectrum[..., f]) for f in range(k)], dim=-1)
    return t_product_circular(torch.fft.ifft(inverse, dim=-1).real, x_b)


def batched_fit(x_a: torch.Tensor, x_b: torch.Tensor) -> torch.Tensor:
    from harness.fuse._tensor import t_least_squares

    return t_least_squares(x_a, x_b)


def timed(fn, *args) -> tuple[float, torch.Tensor]:
    if args[0].is_cuda:
        torch.cuda.synchronize()
    started = time.perf_counter()
    out = fn(*args)
    if args[0].is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - started, out


def adapter_benchmark(words: int, d_a: int, d_b: int, max_subtokens: int, device: str,
                      repeats: int) -> None:
    print(f"\n1. adapter fit: {words} words per subtoken count, d_A={d_a}, d_B={d_b}, "
          f"k=1..{max_subtokens}, {device}")
    g = torch.Generator().manual_seed(0)
    warm = torch.randn(8, 4, 2, generator=g).to(device)
    batched_fit(warm, warm), naive_fit(warm, warm)  # library set-up outside the timings
    totals = {"batched": 0.0, "naive": 0.0}
    for k in range(1, max_subtokens + 1):
        x_a = torch.randn(words, d_a, k, generator=g).to(device)
        x_b = torch.randn(words, d_b, k, generator=g).to(device)
        batched_s = naive_s = float("inf")
        for _ in range(repeats):
            seconds, fast = timed(batched_fit, x_a, x_b)
            batched_s = min(batched_s, seconds)
            seconds, slow = timed(naive_fit, x_a, x_b)
            naive_s = min(naive_s, seconds)
        totals["batched"] += batched_s
        totals["naive"] += naive_s
        gap = float((fast - slow).abs().max() / slow.abs().max())
        print(f"   k={k}: batched {batched_s:7.2f} s   naive per-slice {naive_s:7.2f} s   "
              f"ratio naive/batched {naive_s / batched_s:5.2f}   max rel. diff {gap:.1e}")
    print(f"   all k: batched {totals['batched']:.2f} s, naive {totals['naive']:.2f} s, "
          f"ratio {totals['naive'] / totals['batched']:.2f}; paper: 262 s (4 min 22 s)")


def caption_benchmark(steps: int) -> None:
    from PIL import Image

    from harness.fuse._adapter import AdapterConfig
    from harness.fuse._bridge import Side, connect
    from harness.fuse._caption import CaptionObjective, ClipText, PrimaryLM
    from harness.fuse._search import SearchConfig, search
    from harness.fuse._words import word_start_token
    from harness.contract import ModelRef
    from harness.models.loading import load_causal_lm, load_clip, model_identity
    from harness.tasks.coco_captioning import FIXTURES

    lm_ref, clip_ref = ModelRef("harness-zoo/tiny-gpt2"), ModelRef("harness-zoo/tiny-clip")
    lm, tokenizer = load_causal_lm(lm_ref)
    clip, clip_tokenizer, processor = load_clip(clip_ref)
    primary = PrimaryLM.with_text_prefix(lm, tokenizer, "An image of")
    text = ClipText(clip, clip_tokenizer, "An image of")
    bridge, _ = connect(Side(model_identity(lm_ref), tokenizer, primary.embeddings),
                        Side(model_identity(clip_ref), clip_tokenizer, text.embeddings),
                        AdapterConfig(), "", "correct", 0, cache_root())
    with Image.open(sorted((FIXTURES / "images").iterdir())[0]) as image:
        features = text.image_features([image.convert("RGB")], processor)
    objective = CaptionObjective(primary, text, bridge, features)
    placeholder = word_start_token(tokenizer, "!")
    print(f"\n2. captioning step on the tiny zoo (tiny-gpt2 + tiny-clip), AutoDAN beam 4, "
          f"256 candidates per beam, {steps} steps, CPU")
    seconds = {}
    for guidance in ("fuse", "none"):
        result = search(objective, SearchConfig(guidance=guidance, steps=steps), 0, placeholder)
        seconds[guidance] = result.seconds / steps
        print(f"   guidance={guidance:5s}: {seconds[guidance]:.3f} s per step "
              f"({result.evaluations // steps} exact evaluations per step)")
    beams = torch.tensor([tokenizer(" a red circle on", add_special_tokens=False)["input_ids"]] * 4)
    placeholders = torch.full((4, 1), placeholder)
    started = time.perf_counter()
    for _ in range(5):
        objective.gradients(torch.cat([beams, placeholders], dim=1))
    gradient_s = (time.perf_counter() - started) / 5
    print(f"   ratio fuse/none per step {seconds['fuse'] / seconds['none']:.2f}; the FUSE gradient "
          f"of 4 beams takes {gradient_s:.3f} s ({gradient_s / seconds['fuse']:.0%} of a FUSE step)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--words", type=int, default=16384)
    parser.add_argument("--dim-a", type=int, default=1024)
    parser.add_argument("--dim-b", type=int, default=512)
    parser.add_argument("--max-subtokens", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--caption-steps", type=int, default=3)
    parser.add_argument("--skip-caption", action="store_true")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, {torch.get_num_threads()} threads")
    adapter_benchmark(args.words, args.dim_a, args.dim_b, args.max_subtokens, args.device, args.repeats)
    if not args.skip_caption:
        caption_benchmark(args.caption_steps)


if __name__ == "__main__":
    main()
