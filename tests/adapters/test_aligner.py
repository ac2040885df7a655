"""Exact properties of Aligner (methods.md 2.6) on the tiny GQA Llama and on 7B-shaped configs."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from harness.plugins.aligner.model import inject_aligner

PROMPT = "the cat sat on the mat and the dog ran to the park"


def _ids(tokenizer: Any, text: str = PROMPT) -> torch.Tensor:
    return tokenizer(text, return_tensors="pt").input_ids


def _randomise(aligner: Any, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for gate in aligner.gates:
            gate.copy_(torch.randn(gate.shape, generator=generator))


def _attention_outputs(model: Any, ids: torch.Tensor) -> dict[int, Any]:
    """Per layer: (attention output, the attention's input kwargs)."""
    captured: dict[int, Any] = {}
    handles = [layer.self_attn.register_forward_hook(
        lambda m, a, kw, out, i=i: captured.__setitem__(i, (out[0].detach(), kw)), with_kwargs=True)
        for i, layer in enumerate(model.model.layers)]
    with torch.no_grad():
        model(ids)
    for handle in handles:
        handle.remove()
    return captured


def test_zero_gates_give_the_base_logits_exactly(load_tiny):
    base, tokenizer = load_tiny()
    adapted, _ = load_tiny()
    inject_aligner(adapted, num_tokens=10)
    ids = _ids(tokenizer)
    with torch.no_grad():
        assert torch.equal(adapted(ids).logits, base(ids).logits)


def _rotated_by_hand(q: torch.Tensor, theta: float) -> torch.Tensor:
    """RoPE in the half-split layout of Hugging Face Llama weights, from its definition:
    pair (i, i + d/2) of position t turns by the angle t * theta^(-2i/d)."""
    length, half = q.shape[-2], q.shape[-1] // 2
    frequencies = theta ** (-torch.arange(half, dtype=torch.float64) * 2 / (2 * half))
    angles = torch.arange(length, dtype=torch.float64)[:, None] * frequencies[None, :]
    cos, sin = angles.cos().to(q.dtype), angles.sin().to(q.dtype)
    first, second = q[..., :half], q[..., half:]
    return torch.cat([first * cos - second * sin, second * cos + first * sin], dim=-1)


def test_matches_the_equation_with_gqa(load_tiny):
    """Layer 2's added term equals W_O(g * softmax(RoPE(q) (P W_K)^T / sqrt(d_h)) P W_V),
    written out with explicit softmax, a hand-written rotation (not the rotary helper the
    implementation calls) and key/value heads repeated by hand."""
    model, tokenizer = load_tiny()
    aligner = inject_aligner(model, num_tokens=3)
    ids = _ids(tokenizer)
    with torch.no_grad():
        aligner.prefix.normal_()
    plain = _attention_outputs(model, ids)
    _randomise(aligner)
    adapted = _attention_outputs(model, ids)

    attention = model.model.layers[2].self_attn
    hidden = adapted[2][1]["hidden_states"]
    theta = model.config.rope_parameters["rope_theta"]
    heads, kv_heads, head_dim = 4, 2, attention.head_dim
    with torch.no_grad():
        q = attention.q_proj(hidden).view(1, -1, heads, head_dim).transpose(1, 2)
        q = _rotated_by_hand(q, theta)
        k = attention.k_proj(aligner.prefix).view(1, 3, kv_heads, head_dim).transpose(1, 2)
        v = attention.v_proj(aligner.prefix).view(1, 3, kv_heads, head_dim).transpose(1, 2)
        k, v = (t.repeat_interleave(heads // kv_heads, dim=1) for t in (k, v))  # GQA
        weights = torch.softmax(q @ k.transpose(2, 3) / head_dim ** 0.5, dim=-1)
        mixed = (aligner.gates[0] * (weights @ v)).transpose(1, 2).reshape(1, -1, heads * head_dim)
        expected = mixed @ attention.o_proj.weight.T
    torch.testing.assert_close(adapted[2][0] - plain[2][0], expected, atol=1e-5, rtol=1e-4)
    for layer in (0, 1):  # layers before start_layer are untouched
        assert torch.equal(adapted[layer][0], plain[layer][0])


def test_one_token_adds_a_position_and_input_independent_term(load_tiny):
    model, tokenizer = load_tiny()
    aligner = inject_aligner(model, num_tokens=1)
    deltas = []
    for text in (PROMPT, "a completely different and somewhat longer input sentence here"):
        ids = _ids(tokenizer, text)
        with torch.no_grad():
            for gate in aligner.gates:
                gate.zero_()
        plain = _attention_outputs(model, ids)[2][0]
        _randomise(aligner)
        deltas.append((_attention_outputs(model, ids)[2][0] - plain)[0])
    reference = deltas[0][0]
    assert reference.abs().max() > 1e-3
    for delta in deltas:
        torch.testing.assert_close(delta, reference.expand_as(delta), atol=1e-6, rtol=0)


def test_causality_is_preserved(load_tiny):
    model, tokenizer = load_tiny()
    _randomise(inject_aligner(model, num_tokens=4))
    ids = _ids(tokenizer)
    changed = ids.clone()
    changed[0, 6] = (changed[0, 6] + 17) % 600
    with torch.no_grad():
        first, second = model(ids).logits, model(changed).logits
    torch.testing.assert_close(first[:, :6], second[:, :6], atol=1e-6, rtol=0)
    assert not torch.allclose(first[:, 6:], second[:, 6:])


def test_cached_and_uncached_greedy_generation_agree(load_tiny):
    model, tokenizer = load_tiny()
    aligner = inject_aligner(model, num_tokens=3)
    _randomise(aligner, seed=3)
    ids = _ids(tokenizer)
    with torch.no_grad():
        cached = model.generate(ids, max_new_tokens=12, do_sample=False, use_cache=True)
        uncached = model.generate(ids, max_new_tokens=12, do_sample=False, use_cache=False)
        base_model, _ = load_tiny()
        base = base_model.generate(ids, max_new_tokens=12, do_sample=False)
    assert torch.equal(cached, uncached)
    assert not torch.equal(cached, base)  # the adapter does act on generation


def test_one_prefix_shared_by_every_layer(load_tiny):
    model, tokenizer = load_tiny()
    aligner = inject_aligner(model, num_tokens=2)
    assert all(layer.prefix is aligner.prefix for layer in aligner.layers)
    _randomise(aligner)
    model(_ids(tokenizer)).logits.sum().backward()
    assert aligner.prefix.grad is not None and aligner.prefix.grad.abs().sum() > 0
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names == {"aligner.prefix", "aligner.gates.0", "aligner.gates.1"}


def test_prefix_gradient_is_the_sum_over_every_adapted_layer(load_tiny):
    """Give each adapted layer its own leaf copy of P (same values, so the same forward):
    the shared P's gradient must equal the sum of the copies' gradients, each non-zero."""
    model, tokenizer = load_tiny()
    aligner = inject_aligner(model, num_tokens=2)
    _randomise(aligner)
    ids = _ids(tokenizer)
    model(ids).logits.square().mean().backward()
    shared = aligner.prefix.grad.clone()
    copies = [aligner.prefix.detach().clone().requires_grad_() for _ in aligner.layers]
    for layer, copy in zip(aligner.layers, copies):
        layer.prefix = copy
    model(ids).logits.square().mean().backward()
    assert all(copy.grad.abs().sum() > 0 for copy in copies)
    torch.testing.assert_close(shared, sum(copy.grad for copy in copies), atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("shape, tokens, expected", [
    ((4096, 32, 32), 1, 5_056),  # LLaMA-2-7B, the paper's "5,000 parameters"
    ((4096, 32, 32), 10, 41_920),
    ((5120, 40, 40), 1, 6_640),  # LLaMA-2-13B
    ((5120, 40, 40), 10, 52_720),
])
def test_trainable_count_of_llama2_shapes(shape, tokens, expected):
    """N*d + (L-2)*H, counted on the real module built on the meta device (no weights)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    hidden, layers, heads = shape
    config = LlamaConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                         num_key_value_heads=heads, intermediate_size=hidden * 11 // 4,
                         vocab_size=32_000)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    inject_aligner(model, num_tokens=tokens)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == expected
    assert expected == tokens * hidden + (layers - 2) * heads


def test_rejects_non_rotary_attention():
    from transformers import GPT2Config, GPT2LMHeadModel

    from harness.errors import UsageError

    model = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=3, n_head=2, vocab_size=50))
    with pytest.raises((UsageError, AttributeError)):
        inject_aligner(model)
