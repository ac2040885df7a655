"""PackLLM does its job on two tiny experts trained on two synthetic domains.

On a mixed held-out set (context = first half of a document, continuation = second half)
PackLLM-sim and -opt must beat the uniform ensemble and each expert alone in perplexity,
and put most weight on the expert of each document's domain; a pack whose experts use
different tokenizers (aligned by MinED) must still route by domain.
"""

from __future__ import annotations

import math
import random

import pytest
import torch
from fusion.fusion_support import Request

DOMAINS = {
    "colours": "red green blue yellow purple orange black white brown pink grey violet".split(),
    "numbers": "one two three four five six seven eight nine ten eleven twelve".split(),
}
WORDS_PER_DOC = 12
STEPS = 60


def document(domain: str, rng: random.Random) -> str:
    words = DOMAINS[domain]
    start = rng.randrange(len(words))
    # a cyclic walk with random strides: learnable order, not just a unigram
    return " ".join(words[(start + i * rng.choice((1, 2))) % len(words)] for i in range(WORDS_PER_DOC))


def train_expert(architecture: str, tokenizer, domain: str, seed: int):
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

    torch.manual_seed(seed)
    rng = random.Random(seed)
    vocab = len(tokenizer)
    if architecture == "llama":
        config = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128,
                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                             max_position_embeddings=256, tie_word_embeddings=False)
    else:
        config = GPT2Config(vocab_size=vocab, n_embd=64, n_layer=2, n_head=4, n_positions=256)
    model = AutoModelForCausalLM.from_config(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(STEPS):
        batch = tokenizer([document(domain, rng) for _ in range(8)], return_tensors="pt",
                          padding=True)
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                     labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def tokenizers():
    from harness.contract import ModelRef
    from harness.models.loading import load_tokenizer

    llama = load_tokenizer(ModelRef("harness-zoo/tiny-llama"))
    gpt2 = load_tokenizer(ModelRef("harness-zoo/tiny-gpt2"))
    gpt2.pad_token = gpt2.eos_token
    return llama, gpt2


@pytest.fixture(scope="module")
def experts(tokenizers):
    llama, gpt2 = tokenizers
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # models this small only lose to thread hand-offs
    try:
        return {"colours": train_expert("llama", llama, "colours", 1),
                "numbers": train_expert("llama", llama, "numbers", 2),
                "numbers-gpt2": train_expert("gpt2", gpt2, "numbers", 3)}
    finally:
        torch.set_num_threads(threads)


def held_out() -> list[tuple[str, str, str]]:
    rng = random.Random(99)
    docs = []
    for i in range(12):
        domain = ("colours", "numbers")[i % 2]
        words = document(domain, rng).split()
        half = len(words) // 2
        docs.append((domain, " ".join(words[:half]), " " + " ".join(words[half:])))
    return docs


def pack_lm(models, tokenizers, rule, **options):
    from harness.fusion._options import PackOptions
    from harness.fusion._pack_lm import Member, Pack, PackLM

    members = [Member(f"m{i}", m, t) for i, (m, t) in enumerate(zip(models, tokenizers))]
    return PackLM(Pack(members, "cpu"), rule, PackOptions(**options))


def score(lm, docs) -> tuple[float, list[dict]]:
    """Total continuation log-likelihood and the weight record of each document."""
    from harness.fusion._pack_lm import request_key

    requests = [Request((context, continuation)) for _, context, continuation in docs]
    total = sum(ll for ll, _ in lm.loglikelihood(requests))
    return total, [lm.records[request_key(r.args)] for r in requests]


class Fixed:
    """A weighting that ignores the prompt: one expert alone, or any fixed mix."""

    name = "fixed"

    def __init__(self, weights):
        self.weights = torch.tensor(weights)

    def __call__(self, logits, targets, mask):
        return self.weights

    def check_members(self, count):
        pass


def test_packllm_beats_ensemble_and_each_expert_on_mixed_domains(experts, tokenizers):
    from harness.fusion._weights import GreedyGrid, PerplexitySoftmax, Weighting

    llama, _ = tokenizers
    models = [experts["colours"], experts["numbers"]]
    docs = held_out()
    tokens = sum(len(llama.encode(c + k)) - len(llama.encode(c)) for _, c, k in docs)
    nll = {name: -score(pack_lm(models, [llama, llama], rule), docs)[0] / tokens
           for name, rule in {"colours alone": Fixed([1.0, 0.0]), "numbers alone": Fixed([0.0, 1.0]),
                              "ensemble": Weighting()}.items()}
    for name, rule in {"sim": PerplexitySoftmax(), "opt": GreedyGrid()}.items():
        total, records = score(pack_lm(models, [llama, llama], rule), docs)
        packllm = -total / tokens
        for baseline, value in nll.items():
            assert packllm < value, f"PackLLM-{name} ppl {math.exp(packllm):.2f} vs {baseline} {math.exp(value):.2f}"
        for (domain, _, _), record in zip(docs, records):
            w_colours = record["weights"][0][0]
            assert (w_colours > 0.5) == (domain == "colours"), (name, domain, w_colours)


def test_minED_pack_with_two_tokenizers_routes_by_domain(experts, tokenizers):
    from harness.fusion._weights import PerplexitySoftmax, Weighting

    llama, gpt2 = tokenizers
    models = [experts["colours"], experts["numbers-gpt2"]]
    docs = held_out()
    packllm = pack_lm(models, [llama, gpt2], PerplexitySoftmax())
    total, records = score(packllm, docs)
    for (domain, _, _), record in zip(docs, records):
        assert (record["weights"][0][0] > 0.5) == (domain == "colours")
        # the reference tokenizer follows the domain too (the same for both methods below)
        assert record["reference"] == ("m0" if domain == "colours" else "m1")
    ensemble_total, _ = score(pack_lm(models, [llama, gpt2], Weighting()), docs)
    assert total > ensemble_total
    assert packllm.pack.map_counts  # the MinED map was built and reported
