"""The pack LM against lm-eval's own HFLM, the KV-cached decoder against full recomputation,
and the weight records (response-cache hook, per-sample annotations, report, resume)."""

from __future__ import annotations

import pytest
import torch

from fusion.fusion_support import RecordingHook, Request
from harness.fusion.options import PackOptions
from harness.fusion.pack_lm import Member, Pack, PackLM, request_key
from harness.fusion.weights import PerplexitySoftmax, Weighting

REQUESTS = [("The planet Mars is", " red"), ("Two plus two", " is four."), ("", "Hello there"),
            ("Question: which colour?\nAnswer: ", "blue")]


@pytest.fixture(scope="module")
def zoo():
    from harness.models import ModelRef, load_causal_lm

    return {name: load_causal_lm(ModelRef(f"harness-zoo/{name}"))
            for name in ("tiny-llama", "tiny-llama-b", "tiny-gpt2")}


def make_lm(zoo, names, rule=None, tmp_path=None, **options) -> PackLM:
    members = [Member(n, *zoo[n]) for n in names]
    return PackLM(Pack(members, "cpu"), rule or PerplexitySoftmax(), PackOptions(**options),
                  record_path=None if tmp_path is None else tmp_path / "weights.jsonl")


def test_pack_of_one_model_twice_scores_like_lm_evals_hflm(zoo):
    from lm_eval.models.huggingface import HFLM

    model, tokenizer = zoo["tiny-llama"]
    reference = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=1, device="cpu")
    for rule in (Weighting(), PerplexitySoftmax()):
        lm = make_lm(zoo, ["tiny-llama", "tiny-llama"], rule)
        ours = lm.loglikelihood([Request(r) for r in REQUESTS])
        theirs = reference.loglikelihood([Request(r) for r in REQUESTS], disable_tqdm=True)
        for (a, greedy_a), (b, greedy_b) in zip(ours, theirs):
            assert a == pytest.approx(b, abs=1e-4) and greedy_a == greedy_b
    text = ("lorem ipsum " * 30,)
    rolling = make_lm(zoo, ["tiny-llama", "tiny-llama"], max_length=64)
    reference._max_length = 64
    assert rolling.loglikelihood_rolling([Request(text)])[0] == pytest.approx(
        reference.loglikelihood_rolling([Request(text)], disable_tqdm=True)[0], abs=1e-3)


@pytest.mark.parametrize("names", [["tiny-llama", "tiny-llama-b"], ["tiny-llama", "tiny-gpt2"]])
def test_kv_cached_generation_equals_full_recomputation(zoo, names):
    lm = make_lm(zoo, names)
    family = lm.reference_family("Once upon a time")
    prompt = lm.encode(family, "Once upon a time")
    tokens, weights = lm.generate_tokens(family, prompt, budget=12)
    sequence = list(prompt)
    for _ in range(12):
        logits = lm.pack.logits(family, torch.tensor([sequence]))[:, 0, -1]
        token = int(sum(w * member for w, member in zip(weights, logits)).argmax())
        if token == lm.tokenizer(family).eos_token_id:
            break
        sequence.append(token)
    assert tokens == sequence[len(prompt):]


def test_weights_are_recorded_cached_annotated_and_reloaded(zoo, tmp_path):
    lm = make_lm(zoo, ["tiny-llama", "tiny-gpt2"], tmp_path=tmp_path)
    lm.set_cache_hook(RecordingHook())
    scored = [Request(r) for r in REQUESTS[:2]]
    generated = [Request(("Once upon a time", {"until": ["\n"], "max_gen_toks": 5}))]
    lm.loglikelihood(scored)
    texts = lm.generate_until(generated)
    assert [c[0] for c in lm.cache_hook.calls] == ["loglikelihood"] * 2 + ["generate_until"]
    assert lm.cache_hook.calls[-1][2] == texts[0]
    report = lm.report["fusion"]
    assert report["requests"] == 3 and set(report["weights"]) == {"tiny-llama", "tiny-gpt2"}
    assert report["rule"] == "packllm-sim" and sum(report["reference"].values()) == 3
    sample = {"arguments": [r.args for r in scored]}
    annotation = lm.sample_annotations(sample)["fusion"]
    assert annotation["members"] == ["tiny-llama", "tiny-gpt2"]
    assert len(annotation["weights"]) == 2 and sum(annotation["mean_weights"]) == pytest.approx(1)
    resumed = make_lm(zoo, ["tiny-llama", "tiny-gpt2"], tmp_path=tmp_path)
    assert resumed.sample_annotations(sample) == lm.sample_annotations(sample)
    assert resumed.records.keys() == {request_key(r.args) for r in scored + generated}


def test_context_weights_are_shared_by_options_sequence_weights_are_not(zoo):
    options = [Request(("The sky is", c)) for c in (" blue", " green and wide", " made of cheese")]
    for weights_on, distinct in (("context", 1), ("sequence", 3)):
        lm = make_lm(zoo, ["tiny-llama", "tiny-llama-b"], weights_on=weights_on)
        lm.loglikelihood(options)
        vectors = {tuple(lm.records[request_key(r.args)]["weights"][0]) for r in options}
        assert len(vectors) == distinct


def test_fixed_reference_uses_that_members_tokenizer(zoo):
    lm = make_lm(zoo, ["tiny-llama", "tiny-gpt2"], reference="1")
    lm.loglikelihood([Request(REQUESTS[0])])
    assert lm.report["fusion"]["reference"] == {"tiny-gpt2": 1}
    assert lm.report["fusion"]["vocabulary_maps"]["tiny-gpt2 -> tiny-llama"]["exact"] > 0
