"""Token trees (harness.lm._token_tree): rows continuing one cached prefix run as one sequence
in which each distinct leading token sequence appears once, and every row gets the logits it
gets alone. Tiny random models built here; about 3 s on 2 cores."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from harness.lm._prefix_cache import PrefixCache, PrefixGroup, TreeRun, tree_runs
from harness.lm._token_tree import TokenTree, tree_chunks, tree_size

PREFIX = [3, 17, 8, 22, 5, 9, 30, 11, 4, 26, 13, 7, 19, 2, 28, 6, 21, 15, 10, 24]
# a row that is another's prefix, rows branching after a shared question, a lone row
ROWS = [[40, 41, 42], [40, 41, 42, 43], [40, 41, 44, 45, 46], [40, 47], [33, 34, 35, 36, 37]]


def test_a_tree_holds_each_distinct_leading_sequence_once() -> None:
    tree = TokenTree.of([[1, 2, 3], [1, 2], [1, 4], [5]])
    assert tree.ids == (1, 2, 3, 4, 5)
    assert tree.parents == (-1, 0, 1, 0, -1)
    assert tree.depths == (0, 1, 2, 1, 0)
    assert tree.paths == ((0, 1, 2), (0, 1), (0, 3), (4,))
    visible = tree.visible(2, torch.device("cpu"))[0, 0]
    assert visible.shape == (5, 7)
    # node 2 (token 3) sees the prefix, its ancestors 1 and 2 and itself; node 4 only itself
    assert visible[2].tolist() == [True, True, True, True, True, False, False]
    assert visible[4].tolist() == [True, True, False, False, False, False, True]
    assert tree.positions(2, torch.device("cpu")).tolist() == [[2, 3, 4, 3, 2]]


def test_chunks_count_shared_tokens_once() -> None:
    rows = [[9, 9], [1, 2, 3], [1, 2, 4], [1, 2], [7] * 10]
    # sorted: [1,2] [1,2,3] [1,2,4] [7]*10 [9,9]; the first three hold 4 nodes
    assert tree_chunks(rows, 4) == [[3, 1, 2], [4], [0]]
    assert tree_chunks(rows, 100) == [[3, 1, 2, 4, 0]]
    assert tree_chunks(rows, 1) == [[3], [1], [2], [4], [0]]  # a longer row runs alone
    assert tree_size(rows) == len(TokenTree.of(rows)) == 16


def test_small_groups_run_whole_together_and_large_ones_continue_a_cache() -> None:
    question_a, question_b, shots = list(range(100, 120)), list(range(200, 220)), list(range(300, 340))
    inputs = [question_a + [1, 2], question_a + [3], question_b + [4], question_b + [5, 6],
              *(shots + [k] * 5 for k in range(8))]
    groups = [PrefixGroup(20, (0, 1)), PrefixGroup(20, (2, 3)), PrefixGroup(40, tuple(range(4, 12)))]
    # each question's tree (23 nodes) fits in a tree of whole rows (at most 64, the width) and
    # both fit in one; the shots' tree (80) does not, so its rows continue the cached shots
    # in trees of at most 4 rows x 5 tokens
    assert tree_runs(inputs, groups, batch=4, width=64) == [
        TreeRun(40, (4, 5, 6, 7)), TreeRun(40, (8, 9, 10, 11)), TreeRun(0, (0, 1, 2, 3))]
    assert tree_runs(inputs, groups, batch=4, width=30)[2:] == [TreeRun(0, (0, 1)),
                                                                 TreeRun(0, (2, 3))]
    # a batch of one row holds a group only where its rows all lie on one path
    assert tree_runs(inputs, groups[:2], batch=1, width=64) == [
        TreeRun(20, (0,)), TreeRun(20, (1,)), TreeRun(20, (2,)), TreeRun(20, (3,))]


def _llama(attention: str) -> Any:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=128)
    config._attn_implementation = attention
    return LlamaForCausalLM(config).eval()


def _gpt2() -> Any:
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=32, n_layer=2, n_head=4,
                                      n_positions=128)).eval()


@pytest.mark.parametrize("prefix", [PREFIX, []], ids=["cached-prefix", "whole-rows"])
@pytest.mark.parametrize("build", [lambda: _llama("sdpa"), lambda: _llama("eager"), _gpt2],
                         ids=["llama-sdpa", "llama-eager", "gpt2"])
@torch.no_grad()
def test_tree_logits_are_each_rows_own(build, prefix) -> None:
    model = build()
    cache = PrefixCache(model)
    assert cache.usable(PREFIX + ROWS[2], len(PREFIX))
    tree = TokenTree.of(ROWS)
    logits = cache.tree_logits(prefix, tree)
    assert logits.shape == (len(tree), 50)
    for row, path in zip(ROWS, tree.paths):
        alone = model(input_ids=torch.tensor([prefix + row])).logits[0, len(prefix):]
        assert torch.allclose(logits[list(path)], alone, atol=1e-5)
    some = [1, 4, 9]
    assert torch.allclose(cache.tree_logits(prefix, tree, some), logits[some], atol=1e-5)
