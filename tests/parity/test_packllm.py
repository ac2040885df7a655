"""PackLLM against the official code (cmavro/PackLLM, `downstream_tasks/`) on identical tiny
inputs (methods.md 6.1): fusion weights and fused logits of every rule, the greedy
tie-break, MinED maps, the reference-tokenizer choice and option scoring of the official
protocol. Run with HARNESS_PARITY_PACKLLM=/path/to/PackLLM; skipped otherwise."""

from __future__ import annotations

import contextlib
import io
import re
import sys
from typing import Any

import pytest
import torch
from parity.packllm_support import (CASES, MARKERS, RULES, official_mmlu_items, question_texts,
                                    random_lm)
from parity.parity_support import import_official, official_checkout

CHECKOUT = official_checkout("HARNESS_PARITY_PACKLLM", "cmavro/PackLLM",
                             "downstream_tasks/modeling_llm_fusion.py")

from harness.fusion._alignment import build_map, special_ids, vocabulary  # noqa: E402
from harness.fusion._options import PackOptions  # noqa: E402
from harness.fusion._pack_lm import Member, Pack, PackLM  # noqa: E402
from harness.fusion._weights import ExpertContrast, GreedyGrid, Weighting, fuse  # noqa: E402


@pytest.fixture(scope="module")
def official() -> Any:
    return load_official()


def load_official() -> Any:
    """The official modules; `icl_model` imports transformers' removed AdamW, unused here."""
    folder = CHECKOUT / "downstream_tasks"
    [fusion, data] = import_official(folder, ["modeling_llm_fusion", "icl_data"],
                                     {"editdistance": {"eval": _levenshtein}})
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys.modules["transformers"], "AdamW", torch.optim.AdamW, raising=False)
        [model] = import_official(folder, ["icl_model"])
    return type("Official", (), {"fusion": fusion, "data": data, "model": model})


def _levenshtein(a: str, b: str) -> int:
    """`editdistance.eval` (the pinned 0.8.1) when it is not installed: same distance."""
    from rapidfuzz.distance import Levenshtein

    return Levenshtein.distance(a, b)


@pytest.fixture(scope="module")
def tokenizers() -> dict[str, Any]:
    from harness.contract import ModelRef
    from harness.models.loading import load_tokenizer

    return {name: load_tokenizer(ModelRef(f"harness-zoo/{name}"))
            for name in ("tiny-llama", "tiny-gpt2")}


def _official_pack(official: Any, fusion: str, models: list[Any], tokenizers: list[Any],
                   maps: list[dict[int, int] | None]) -> Any:
    """Their `PackLLM` without `__init__` (which downloads tokenizers), reference = member 0."""
    pack = official.fusion.PackLLM.__new__(official.fusion.PackLLM)
    torch.nn.Module.__init__(pack)
    reference = "reference"
    pack.models, pack.fusion, pack.all_lams = models, fusion, []
    pack.tokenizers = {reference: tokenizers[0]}
    pack.tokenizers_l = tokenizers
    pack.current_tokenizer = reference
    pack.tokenizer_list = {reference: tokenizers}
    pack.vocab_mappings_base = {reference: maps}
    pack.accelerator = type("Accelerator", (), {"device": torch.device("cpu")})()
    return pack


def _official_forward(pack: Any, ids: torch.Tensor) -> tuple[torch.Tensor, str]:
    printed = io.StringIO()
    with torch.no_grad(), contextlib.redirect_stdout(printed):
        output = pack(input_ids=ids, attention_mask=torch.ones_like(ids), return_dict=True)
    return output.logits[0], printed.getvalue()


def _official_weights(fusion: str, printed: str, count: int) -> torch.Tensor:
    """The weights the official forward used, in member order, read from what it prints."""
    numbers = lambda pattern: [float(x) for x in re.findall(r"-?[\d.e-]+",  # noqa: E731
                                                            re.search(pattern, printed).group(1))]
    if fusion == "sim":
        return torch.tensor(numbers(r"test lambdas unsorted:\s+\[(.*)\]"))
    if fusion == "opt":
        order = [int(x) for x in numbers(r"sorted experts:\s+\[(.*)\]")]
        weights = torch.zeros(count)
        weights[order] = torch.tensor(numbers(r"test lambdas sorted:\s+\[(.*)\]"))
        return weights
    if fusion == "top1":
        return torch.nn.functional.one_hot(
            torch.tensor(int(numbers(r"top1 id:\s+tensor\((\d+)")[0])), count).float()
    if fusion == "ensemble":
        return torch.full((count,), 1.0 / count)
    alpha = numbers(r"Best lambda dexpert:\s+(\S+)")[0] if fusion == "dexperts-opt" else 1.0
    return ExpertContrast.contrast(alpha, torch.zeros(1))


def _ours(rule: Any, models: list[Any], tokenizer: Any, ids: torch.Tensor
          ) -> tuple[torch.Tensor, torch.Tensor]:
    pack = Pack([Member(f"m{k}", model, tokenizer) for k, model in enumerate(models)], "cpu")
    lm = PackLM(pack, rule, PackOptions(weights_on="sequence", reference="0"))
    logits = pack.logits(0, ids)[:, 0, :-1]
    targets = ids[0, 1:]
    weights = rule(logits, targets, lm.weight_mask(0, targets, len(targets)))
    return weights, fuse(logits, weights)


def _inputs(tokenizer: Any, count: int, seed: int) -> list[torch.Tensor]:
    """Random id sequences of 6-24 tokens with a few EOS inside (targets PackLLM ignores)."""
    generator = torch.Generator().manual_seed(seed)
    sequences = []
    for _ in range(count):
        ids = torch.randint(0, len(tokenizer), (1, int(torch.randint(6, 25, (1,), generator=generator))),
                            generator=generator)
        ids[0, torch.randint(1, ids.shape[1], (2,), generator=generator)] = tokenizer.eos_token_id
        sequences.append(ids)
    return sequences


@pytest.mark.parametrize("fusion, members", CASES)
def test_weights_and_fused_logits_match_the_official_forward(official, tokenizers, fusion, members):
    tokenizer = tokenizers["tiny-gpt2"]
    models = [random_lm("gpt2", len(tokenizer), seed) for seed in range(members)]
    theirs = _official_pack(official, fusion, models, [tokenizer] * members, [None] * members)
    for ids in _inputs(tokenizer, 8, seed=members):
        their_logits, printed = _official_forward(theirs, ids)
        weights, fused = _ours(RULES[fusion], models, tokenizer, ids)
        torch.testing.assert_close(weights, _official_weights(fusion, printed, members),
                                   atol=3e-6, rtol=0)
        torch.testing.assert_close(fused, their_logits, atol=2e-5, rtol=1e-5)


def test_greedy_ties_give_all_weight_to_the_last_copy(official, tokenizers):
    """Three copies of one member: ours puts all weight on the last copy, which the official
    strict `<` scan from lambda = 0 picks in exact arithmetic. In float arithmetic the
    official scan picks among the tied lambdas by rounding noise (e.g. [0.0875, 0.1625,
    0.75] on 2 cores), so of its result only the fused logits must agree."""
    tokenizer = tokenizers["tiny-gpt2"]
    model = random_lm("gpt2", len(tokenizer), seed=0)
    theirs = _official_pack(official, "opt", [model] * 3, [tokenizer] * 3, [None] * 3)
    for ids in _inputs(tokenizer, 4, seed=9):
        their_logits, _ = _official_forward(theirs, ids)
        weights, fused = _ours(GreedyGrid(), [model] * 3, tokenizer, ids)
        assert weights.tolist() == [0, 0, 1]
        torch.testing.assert_close(fused, their_logits, atol=2e-5, rtol=1e-5)


def _official_map(official: Any, reference: Any, expert: Any, markers: tuple[str, str]
                  ) -> list[int]:
    """`align_tokenizers`' map, expert candidates in id order (our tie rule; theirs follows
    `get_vocab()` order, which for fast tokenizers is a hash order)."""
    reference_tokens, expert_tokens = vocabulary(reference), vocabulary(expert)
    expert_ids = {token: index for index, token in enumerate(expert_tokens)}
    return [expert_ids[official.fusion.find_best_mapping(token, expert_tokens, *markers)[1]]
            for token in reference_tokens]


@pytest.mark.parametrize("direction", [("tiny-gpt2", "tiny-llama"), ("tiny-llama", "tiny-gpt2")])
def test_mined_maps_every_ordinary_token_as_officially(official, tokenizers, direction):
    reference, expert = (tokenizers[name] for name in direction)
    theirs = _official_map(official, reference, expert, tuple(MARKERS[n] for n in direction))
    ours = build_map(vocabulary(reference), vocabulary(expert), special_ids(reference),
                     special_ids(expert)).index.tolist()
    specials = set(special_ids(reference).values())
    ordinary = [i for i in range(len(reference)) if i not in specials]
    assert [ours[i] for i in ordinary] == [theirs[i] for i in ordinary]
    # special tokens map by role instead (our fix): the reference EOS is the expert's EOS
    assert ours[reference.eos_token_id] == expert.eos_token_id


@pytest.fixture(scope="module")
def mixed_pack(tokenizers) -> tuple[list[Any], list[Any]]:
    models = [random_lm("llama", len(tokenizers["tiny-llama"]), seed=11),
              random_lm("gpt2", len(tokenizers["tiny-gpt2"]), seed=12)]
    return models, [tokenizers["tiny-llama"], tokenizers["tiny-gpt2"]]


def test_reference_tokenizer_choice_matches_select_tokenizer(official, mixed_pack):
    models, tokenizers = mixed_pack
    theirs = _official_pack(official, "sim", models, tokenizers, [None, None])
    ours = PackLM(Pack([Member(f"m{k}", m, t) for k, (m, t) in enumerate(zip(models, tokenizers))],
                       "cpu"), Weighting(), PackOptions())
    texts = question_texts()
    their_choice = [theirs.select_tokenizer([text]) for text in texts]
    our_choice = [ours._lowest_perplexity_family(text) for text in texts]
    assert our_choice == their_choice
    assert 0 < sum(their_choice) < len(texts)  # both tokenizers win somewhere: a real test


def _official_options(official: Any, tokenizer: Any, question: str, options: list[str]) -> Any:
    """Their MetaICLData tensorize of one MMLU-format item, 0-shot, without its
    `__init__` (which downloads the tokenizer)."""
    data = official.data.MetaICLData.__new__(official.data.MetaICLData)
    data.tokenizer, data.method, data.use_demonstrations, data.k = tokenizer, "direct", False, 0
    data.max_length, data.max_length_per_example = 2048, 2048
    data.tensorize([], [{"input": question, "options": options}], prompt=["\nAnswer:"])
    return data


@pytest.mark.parametrize("fusion", ["sim", "opt"])
def test_official_protocol_scores_options_as_the_released_pipeline(official, mixed_pack, fusion):
    """Per option: their `do_inference` (fused forward on the EOS-padded context + option,
    weights refitted per option, mean loss over option tokens) against our scorer with
    protocol=official on the same token ids, both tokenizers taking the reference role."""
    models, tokenizers = mixed_pack
    items = official_mmlu_items(10)
    for reference in (0, 1):
        order = [reference, 1 - reference]
        pack = Pack([Member(f"m{k}", models[k], tokenizers[k]) for k in order], "cpu")
        maps = [None, {i: int(j) for i, j in enumerate(pack.index(0, 1).tolist())}]
        theirs = _official_pack(official, fusion, [models[k] for k in order],
                                [tokenizers[k] for k in order], maps)
        runner = official.model.MetaICLModel.__new__(official.model.MetaICLModel)
        runner.model, runner.accelerator = theirs, theirs.accelerator
        ours = PackLM(pack, RULES[fusion], PackOptions(protocol="official", reference="0"))
        for question, options in items:
            data = _official_options(official, tokenizers[reference], question, options)
            with contextlib.redirect_stdout(io.StringIO()):
                their_losses = runner.do_inference(data)
            inputs = data.tensorized_inputs
            pairs = [(row[:int((types == 1).nonzero()[0])].tolist(), row[types == 1].tolist())
                     for row, types in zip(inputs["input_ids"], inputs["token_type_ids"])]
            our_losses = [-score for score, _, _ in ours._score(0, pairs, "sequence", mean=True)]
            assert our_losses == pytest.approx(their_losses, abs=2e-5)
