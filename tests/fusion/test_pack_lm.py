"""The pack LM against lm-eval's own HFLM, the KV-cached decoder against full recomputation,
and the weight records (response-cache hook, per-sample annotations, report, resume)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch
from fusion.fusion_support import RecordingHook, Request

from harness.contract import MethodReport
from harness.fusion._options import PackOptions
from harness.fusion._pack_lm import Member, Pack, PackLM, request_key
from harness.fusion._weights import PerplexitySoftmax, Weighting

REQUESTS = [("The planet Mars is", " red"), ("Two plus two", " is four."), ("", "Hello there"),
            ("Question: which colour?\nAnswer: ", "blue")]


@pytest.fixture(scope="module")
def zoo():
    from harness.contract import ModelRef
    from harness.models.loading import load_causal_lm

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
    report = lm.report.facts["fusion"]
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
    assert lm.report.facts["fusion"]["reference"] == {"tiny-gpt2": 1}
    assert lm.report.facts["fusion"]["vocabulary_maps"]["tiny-gpt2 -> tiny-llama"]["exact"] > 0


def test_protocols_preset_three_settings_and_official_refuses_contradictions():
    from harness.errors import UsageError
    from harness.options import build_options

    def resolved(**values):
        options = build_options(PackOptions, values, "packllm")
        return options.reference_on, options.weights_on, options.option_score

    assert resolved() == ("context", "context", "sum")
    assert resolved(protocol="official") == ("question", "sequence", "mean")
    assert resolved(weights_on="sequence") == ("context", "sequence", "sum")
    assert resolved(protocol="official", option_score="mean") == ("question", "sequence", "mean")
    with pytest.raises(UsageError, match="protocol=official sets weights_on=sequence"):
        resolved(protocol="official", weights_on="context")


def test_official_protocol_picks_the_reference_on_the_question_alone(zoo, monkeypatch):
    lm = make_lm(zoo, ["tiny-llama", "tiny-gpt2"], protocol="official")
    seen = []
    chooser = lm._lowest_perplexity_family
    monkeypatch.setattr(lm, "_lowest_perplexity_family", lambda text: seen.append(text) or chooser(text))
    doc = {"question": "Which colour is the sky?", "choices": ["blue", "green"]}
    context = "Q: What is two plus two?\nA: four\n\nQ: Which colour is the sky?\nA:"
    lm.loglikelihood([Request((context, " blue"), doc), Request((context, " green"), doc)])
    lm.generate_until([Request((context, {"until": ["\n"], "max_gen_toks": 2}), doc)])
    assert seen == ["Which colour is the sky?"]  # chosen once, cached for the doc's requests


def test_official_protocol_without_the_question_field_names_the_fix(zoo):
    from harness.errors import UsageError

    lm = make_lm(zoo, ["tiny-llama", "tiny-gpt2"], protocol="official")
    with pytest.raises(UsageError, match=r"\(fields: input, target\); name one with -o question_field"):
        lm.loglikelihood([Request(("Say:", " hi"), {"input": "Say:", "target": "hi"})])


def test_official_protocol_scores_the_per_token_mean_with_sequence_weights(zoo):
    doc = {"question": "The sky is"}
    requests = [Request(("The sky is", c), doc) for c in (" blue", " green and wide")]
    official = make_lm(zoo, ["tiny-llama", "tiny-gpt2"], protocol="official", reference="0")
    summed = make_lm(zoo, ["tiny-llama", "tiny-gpt2"], weights_on="sequence", reference="0")
    for request, (mean, _), (total, _) in zip(requests, official.loglikelihood(requests),
                                              summed.loglikelihood(requests)):
        _, continuation = summed.encode_pair(0, *request.args)
        assert len(continuation) > 1 and mean == pytest.approx(total / len(continuation), abs=1e-6)
    assert official.report.facts["fusion"]["protocol"] == "official"


@dataclass(frozen=True)
class RecordingWeighting(Weighting):
    """Uniform weights, remembering what the pack LM handed to the rule."""

    calls: list = field(default_factory=list)

    def __call__(self, logits, targets, mask):
        self.calls.append((logits.clone(), targets.clone(), mask.clone()))
        return super().__call__(logits, targets, mask)


def test_weights_see_logits_before_each_target_and_skip_eos_targets(zoo):
    rule = RecordingWeighting()
    lm = make_lm(zoo, ["tiny-llama", "tiny-llama-b"], rule, weights_on="sequence", reference="0")
    tokenizer = lm.tokenizer(0)
    context, continuation = "the cat sat</s> on the", " mat</s> and"
    lm.loglikelihood([Request((context, continuation))])
    [(logits, targets, mask)] = rule.calls
    ids = tokenizer.encode(context + continuation)
    eos = tokenizer.eos_token_id
    assert ids.count(eos) == 2 and ids[-1] != eos  # two EOS targets inside the sequence
    assert targets.tolist() == ids[1:]  # position i predicts ids[i + 1]
    assert mask.tolist() == [t != eos for t in ids[1:]]
    with torch.no_grad():
        for k, name in enumerate(["tiny-llama", "tiny-llama-b"]):
            member = zoo[name][0](torch.tensor([ids])).logits[0]
            torch.testing.assert_close(logits[k], member[:-1], atol=1e-5, rtol=0)  # logits[:-1]


@pytest.mark.parametrize("names", [["tiny-llama", "tiny-llama-b"], ["tiny-llama", "tiny-gpt2"]])
def test_batched_generation_equals_one_prompt_at_a_time(zoo, names):
    """Left padding, one cache per member and per-row positions: in fp32 every row decodes
    the tokens it decodes alone, with next-token logits within 1e-5."""
    lm = make_lm(zoo, names)
    texts = ["Once upon a time", "The planet", "Question: which colour is the sky?\nAnswer:",
             "Two plus two is"]
    family = lm.reference_family(texts[0])
    prompts = [lm.encode(family, t) for t in texts]
    batched = lm.generate_batch(family, prompts, budget=10, return_logits=True)
    for prompt, (tokens, weights, logits) in zip(prompts, batched):
        [(alone, alone_weights, alone_logits)] = lm.generate_batch(family, [prompt], budget=10,
                                                                   return_logits=True)
        assert tokens == alone
        torch.testing.assert_close(weights, alone_weights, atol=1e-6, rtol=0)
        torch.testing.assert_close(logits, alone_logits, atol=1e-5, rtol=0)


def test_batched_requests_answer_like_single_requests_and_stop_at_stop_strings(zoo):
    requests = [Request((text, {"until": ["\n", " the"], "max_gen_toks": 12}))
                for text in ("Once upon a time", "The planet Mars", "Hello", "A B C D E F")]
    one = make_lm(zoo, ["tiny-llama", "tiny-gpt2"])
    four = make_lm(zoo, ["tiny-llama", "tiny-gpt2"])
    four.batch_size = 4
    one.set_cache_hook(RecordingHook())
    four.set_cache_hook(RecordingHook())
    texts = four.generate_until(requests)
    assert texts == one.generate_until(requests)
    assert all(" the" not in t and "\n" not in t for t in texts)


def test_reuse_for_another_cell_starts_records_and_report_afresh(zoo, tmp_path):
    from types import SimpleNamespace

    lm = make_lm(zoo, ["tiny-llama", "tiny-gpt2"], tmp_path=tmp_path / "first")
    lm.set_cache_hook(RecordingHook())
    lm.loglikelihood([Request(REQUESTS[0])])
    first_report = lm.report
    second = SimpleNamespace(workdir=tmp_path / "second", report=MethodReport())
    lm.begin_cell(second)
    assert lm.records == {} and lm.report is second.report
    lm.loglikelihood([Request(REQUESTS[1])])
    assert second.report.facts["fusion"]["requests"] == 1
    assert first_report.facts["fusion"]["requests"] == 1
    # a resumed cell whose answers all come from lm-eval's response cache keeps its report
    resumed = make_lm(zoo, ["tiny-llama", "tiny-gpt2"], tmp_path=tmp_path / "first")
    assert resumed.report.facts["fusion"]["requests"] == 1
    assert resumed.report.facts["fusion"]["weights"] == first_report.facts["fusion"]["weights"]
    assert (resumed.report.facts["fusion"].get("vocabulary_maps")
            == first_report.facts["fusion"].get("vocabulary_maps"))


def test_auto_batch_size_halves_on_out_of_memory(zoo, monkeypatch):
    """--batch-size auto: a batch that does not fit is retried at half the size; the
    answers are those of a small fixed batch."""
    fixed = make_lm(zoo, ["tiny-llama", "tiny-gpt2"])
    fixed.set_cache_hook(RecordingHook())
    expected = fixed.loglikelihood([Request(r) for r in REQUESTS])
    members = [Member(n, *zoo[n]) for n in ("tiny-llama", "tiny-gpt2")]
    auto = PackLM(Pack(members, "cpu"), PerplexitySoftmax(), PackOptions(), batch_size="auto")
    auto.set_cache_hook(RecordingHook())
    real_logits = auto.pack.logits

    def small_memory(family, ids, attention_mask=None):
        if ids.shape[0] > 2:
            raise torch.OutOfMemoryError("simulated")
        return real_logits(family, ids, attention_mask)

    monkeypatch.setattr(auto.pack, "logits", small_memory)
    answers = auto.loglikelihood([Request(r) for r in REQUESTS])
    assert auto.batch_size == 2
    for (a, greedy_a), (b, greedy_b) in zip(answers, expected):
        assert a == pytest.approx(b, abs=1e-5) and greedy_a == greedy_b
    fixed_big = PackLM(Pack(members, "cpu"), PerplexitySoftmax(), PackOptions(), batch_size=4)
    monkeypatch.setattr(fixed_big.pack, "logits", small_memory)
    with pytest.raises(torch.OutOfMemoryError):
        fixed_big.loglikelihood([Request(r) for r in REQUESTS])
