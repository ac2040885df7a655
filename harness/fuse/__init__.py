"""FUSE (Williams & Kolter, COLM 2024): gradients across tokenizers.

- `tensor`: the t-product algebra (t-product, t-transpose, t-pseudo-inverse) through the FFT.
- `words`: the dictionary and which word each token belongs to.
- `adapter`: the per-subtoken-count maps T_k = X_A^+ * X_B, fitted zero-shot and cached.
- `bridge`: model A's tokens -> model B's input embeddings, exact forward, adapter backward
  ("correct" adjoint or the released code's "official" behaviour).
- `search`: AutoDAN / GCG token search with beams, FUSE-guided or not.
- `caption`: the zero-shot captioning objective (causal LM + CLIP).
- `prompt`: prompt discovery against a pack of models with different tokenizers.
- `options`: the options both FUSE methods share (torch-free).

Everything but `options` imports torch; method plugins import those inside `build`.
"""
