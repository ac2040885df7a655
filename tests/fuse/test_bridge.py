"""The bridge between tokenizers: exact forward, adapter backward (both adjoints)."""

from __future__ import annotations

import pytest
import torch

from harness.contract import ModelRef
from harness.fuse._adapter import Adapter, AdapterConfig, fit_adapter
from harness.fuse._bridge import Alignment, Bridge, Side, connect
from harness.fuse._tensor import t_identity, t_product
from harness.fuse._words import decoded_spans, token_words
from harness.models.loading import load_tokenizer, model_identity
from harness.settings import cache_root

TEXT = " a red circle on a white background"
D_A, D_B = 5, 4


@pytest.fixture(scope="module")
def tokenizers() -> tuple:
    return load_tokenizer(ModelRef("harness-zoo/tiny-gpt2")), load_tokenizer(ModelRef("harness-zoo/tiny-clip"))


@pytest.fixture(scope="module")
def pair(tokenizers: tuple) -> tuple:
    """Tiny random float64 embedding tables and adapter maps for the two tokenizers."""
    tok_a, tok_b = tokenizers
    g = torch.Generator().manual_seed(0)
    table_a = torch.randn(len(tok_a), D_A, generator=g, dtype=torch.float64)
    table_b = torch.randn(len(tok_b), D_B, generator=g, dtype=torch.float64)
    maps = tuple(torch.randn(D_A, D_B, k, generator=g, dtype=torch.float64) for k in range(1, 5))
    return table_a, table_b, Adapter(maps, (1, 1, 1, 1))


def ids_of(tokenizer, text: str = TEXT) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_tokens_are_assigned_to_whitespace_words(tokenizers: tuple) -> None:
    tok_a, tok_b = tokenizers
    text, spans = decoded_spans(tok_a, ids_of(tok_a, " a red circle, on"))
    assert text == " a red circle, on"
    assert token_words(spans, text) == [0, 1, 1, 2, 2, 3]  # "Ġa" "Ġre" "d" "Ġcircle" "," "Ġon"
    encoded = tok_b(text, add_special_tokens=False, return_offsets_mapping=True)
    assert token_words(encoded["offset_mapping"], text) == [0, 1, 2, 2, 3]  # "circle</w>" ",</w>"


def test_forward_is_exact_retokenisation(tokenizers: tuple, pair: tuple) -> None:
    tok_a, tok_b = tokenizers
    table_a, table_b, adapter = pair
    bridge = Bridge(tok_a, tok_b, table_b, adapter)
    rows = [ids_of(tok_a), ids_of(tok_a, " one green square")]
    width = max(map(len, rows))
    x_a = torch.stack([torch.nn.functional.pad(table_a[r], (0, 0, 0, width - len(r))) for r in rows])
    x_b, ids_b = bridge.embed(x_a, rows)
    for number, row in enumerate(rows):
        expected = ids_of(tok_b, tok_a.decode(row))
        assert ids_b[number] == expected == bridge.ids_b(rows)[number]
        torch.testing.assert_close(x_b[number, :len(expected)], table_b[expected], rtol=0, atol=0)
        assert not x_b[number, len(expected):].any()


def _relaxed_forward(x_a: torch.Tensor, x_0: torch.Tensor, bridge: Bridge, alignment: Alignment) -> torch.Tensor:
    """The continuous map the adapter stands for around A's embeddings x_0: B's exact rows
    plus, word by word, (A rows - x_0 rows, cut or zero-padded to the B count k) * T_k."""
    rows = [bridge.embeddings_b[i] for i in alignment.ids_b]
    for word in sorted(set(alignment.words_b)):
        b_positions = [p for p, w in enumerate(alignment.words_b) if w == word]
        a_positions = [p for p, w in enumerate(alignment.words_a) if w == word]
        k = len(b_positions)
        if k > bridge.adapter.max_subtokens or not a_positions:
            continue
        kept = a_positions[:k]
        tube = torch.zeros(D_A, k, dtype=x_a.dtype)
        tube[:, :len(kept)] = (x_a - x_0)[0, kept].T
        mapped = t_product(tube[None], bridge.adapter.maps[k - 1])[0]
        for slot, position in enumerate(b_positions):
            rows[position] = rows[position] + mapped[:, slot]
    return torch.stack(rows)[None]


def _loss(x_b: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return (torch.tanh(x_b) * weights).sum()


@pytest.mark.parametrize("adjoint", ["correct", "official"])
def test_backward_against_finite_differences(tokenizers: tuple, pair: tuple, adjoint: str) -> None:
    """The correct adjoint is the exact gradient of the relaxed forward; the released
    backward is not (it reads every word's gradient from the start of the text)."""
    tok_a, tok_b = tokenizers
    table_a, table_b, adapter = pair
    bridge = Bridge(tok_a, tok_b, table_b, adapter, adjoint)
    ids = ids_of(tok_a)
    counts = {len([w for w in bridge.align([ids])[0].words_b if w == word]) for word in range(7)}
    assert {1, 3, 4} <= counts  # words of one, three and four CLIP tokens
    weights = torch.randn(1, len(bridge.ids_b([ids])[0]), D_B, dtype=torch.float64,
                          generator=torch.Generator().manual_seed(1))
    x_a = table_a[ids][None].clone().requires_grad_(True)
    x_b, _ = bridge.embed(x_a, [ids])
    _loss(x_b, weights).backward()

    numeric, alignment = torch.zeros_like(x_a), bridge.align([ids])[0]
    step = 1e-6
    for index in range(x_a.numel()):
        delta = torch.zeros_like(x_a).view(-1)
        delta[index] = step
        delta = delta.view_as(x_a)
        up = _loss(_relaxed_forward(x_a.detach() + delta, x_a.detach(), bridge, alignment), weights)
        down = _loss(_relaxed_forward(x_a.detach() - delta, x_a.detach(), bridge, alignment), weights)
        numeric.view(-1)[index] = (up - down) / (2 * step)
    assert numeric.abs().max() > 0.1
    if adjoint == "correct":
        torch.testing.assert_close(x_a.grad, numeric, rtol=1e-6, atol=1e-7)
    else:
        assert (x_a.grad - numeric).abs().max() > 0.1


def test_one_hot_at_the_last_position_exposes_the_released_slicing(tokenizers: tuple, pair: tuple) -> None:
    """An upstream gradient on the last CLIP token only: the correct backward puts it on the
    last word's tokens; the released one never reaches the last word (every word reads the
    first rows of the gradient), and a one-hot on the first row reaches every word."""
    tok_a, tok_b = tokenizers
    table_a, table_b, adapter = pair
    ids = ids_of(tok_a)
    alignment = Bridge(tok_a, tok_b, table_b, adapter).align([ids])[0]
    last_word = [p for p, w in enumerate(alignment.words_a) if w == alignment.words_a[-1]]
    others = [p for p in range(len(ids)) if p not in last_word]

    def gradient(adjoint: str, row: int) -> torch.Tensor:
        upstream = torch.zeros(1, len(alignment.ids_b), D_B, dtype=torch.float64)
        upstream[0, row, 0] = 1.0
        bridge = Bridge(tok_a, tok_b, table_b, adapter, adjoint)
        return bridge.backward(upstream, [alignment], torch.Size([1, len(ids), D_A]))[0]

    correct, released = gradient("correct", -1), gradient("official", -1)
    assert correct[last_word].abs().sum() > 0 and not correct[others].any()
    assert not released.any()
    first_word = [p for p, w in enumerate(alignment.words_a) if w == 0]
    assert not gradient("correct", 0)[[p for p in range(len(ids)) if p not in first_word]].any()
    released_first = gradient("official", 0)
    assert all(released_first[[p for p, w in enumerate(alignment.words_a) if w == word]].abs().sum() > 0
               for word in set(alignment.words_a))


def test_identical_models_pass_the_gradient_unchanged(tokenizers: tuple, pair: tuple) -> None:
    tok_a, _ = tokenizers
    table_a, _, _ = pair
    ref = ModelRef("harness-zoo/tiny-gpt2")
    side = Side(model_identity(ref), tok_a, table_a)
    bridge, report = connect(side, side, AdapterConfig(), "", "correct", 0, cache_root())
    assert bridge.identity and report == {"identity": True}
    ids = ids_of(tok_a)
    weights = torch.randn(1, len(ids), D_A, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    x_a = table_a[ids][None].clone().requires_grad_(True)
    direct = x_a.detach().clone().requires_grad_(True)
    x_b, ids_b = bridge.embed(x_a, [ids])
    _loss(x_b, weights).backward()
    _loss(direct, weights).backward()
    assert ids_b == [ids]
    assert torch.equal(x_a.grad, direct.grad)


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_adapter_between_a_model_and_itself_is_the_identity(k: int) -> None:
    """X^+ * X is the identity tensor when the dictionary has at least d words of each
    count (full column rank in every Fourier slice)."""
    table = torch.randn(200, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(k))
    g = torch.Generator().manual_seed(10 + k)
    ids = [torch.randint(0, 200, (k,), generator=g).tolist() for _ in range(40)]
    adapter = fit_adapter(table, table, ids, ids, AdapterConfig(max_subtokens=k), counts=[k])
    torch.testing.assert_close(adapter.maps[0], t_identity(6, k), rtol=0, atol=1e-4)


def test_a_shared_vocabulary_passes_the_exact_gradient_through_the_second_table(tokenizers: tuple) -> None:
    """A model B reading A's token ids (its vocabulary holds A's under the same ids): the
    bridge embeds A's one-hot rows with B's own table, so the gradient is plain backprop."""
    tok_a, _ = tokenizers
    g = torch.Generator().manual_seed(3)
    table_a = torch.randn(len(tok_a), D_A, generator=g, dtype=torch.float64)
    table_b = torch.randn(len(tok_a) + 1, D_B, generator=g, dtype=torch.float64)  # one token more
    bridge, report = connect(Side("a", tok_a, table_a), Side("b", tok_a, table_b), AdapterConfig(), "",
                             "correct", 0, cache_root())
    assert report == {"shared_vocabulary": True} and bridge.exact and not bridge.identity
    ids = ids_of(tok_a)
    one_hot = torch.nn.functional.one_hot(torch.tensor([ids]), len(tok_a)).double().requires_grad_(True)
    weights = torch.randn(1, len(ids), D_B, dtype=torch.float64, generator=g)
    x_b, ids_b = bridge.embed_one_hot(one_hot, table_a, [ids])
    assert ids_b == [ids] == bridge.ids_b([ids])
    _loss(x_b, weights).backward()
    direct = torch.autograd.functional.jacobian(
        lambda o: _loss(o @ table_b[:len(tok_a)], weights), one_hot.detach())
    torch.testing.assert_close(one_hot.grad, direct, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="embed_one_hot"):
        bridge.embed(table_a[ids][None], [ids])
