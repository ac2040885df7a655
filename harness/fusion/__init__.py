"""Test-time fusion of a pack of language models (PackLLM and its baselines).

- `alignment`: MinED vocabulary maps between tokenizers, cached on disk.
- `weights`: the weighting rules (PackLLM sim/opt, uniform, top-1, DExperts).
- `pack_lm`: the lm-eval `LM` that runs the pack and fuses logits per example.
- `options`: the options every fusion method shares (torch-free).

Method plugins import `weights` and `pack_lm` inside `build`; both pull in torch.
"""
