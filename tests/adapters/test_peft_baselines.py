"""The peft baselines as lm-eval sees them: zero-init identity, cached generation, and
prompt tuning's logits lined up with the input positions."""

from __future__ import annotations

import pytest
import torch

from harness.plugins.llama_adapter import LlamaAdapterOptions
from harness.plugins.llama_adapter import adapt as llama_adapter
from harness.plugins.lora import LoraOptions
from harness.plugins.lora import adapt as lora
from harness.plugins.prompt_tuning import PromptTuningOptions
from harness.plugins.prompt_tuning import adapt as prompt_tuning

PROMPT = "the cat sat on the mat and the dog ran to the park"


@pytest.mark.parametrize("adapt, options", [(lora, LoraOptions()), (llama_adapter, LlamaAdapterOptions())],
                         ids=["lora", "llama_adapter"])
def test_zero_initialised_adapters_start_at_the_base(load_tiny, adapt, options):
    base, tokenizer = load_tiny()
    model, _ = load_tiny()
    adapted = adapt(model, options).eval()
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(adapted(input_ids=ids).logits, base(ids).logits, atol=1e-6, rtol=0)


def test_llama_adapter_generation_with_and_without_cache(load_tiny):
    model, tokenizer = load_tiny()
    adapted = llama_adapter(model, LlamaAdapterOptions(adapter_len=4)).eval()
    with torch.no_grad():
        for name, parameter in adapted.named_parameters():
            if "adaption_gate" in name:
                parameter.fill_(2.0)
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        cached = adapted.generate(input_ids=ids, max_new_tokens=8, do_sample=False, use_cache=True)
        uncached = adapted.generate(input_ids=ids, max_new_tokens=8, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)


def test_prompt_tuning_generates_the_greedy_argmax_of_full_forwards(load_tiny):
    """peft's cached decoding of a soft prompt ignores positions and drifts from the second
    generated token (peft issue 1391); the adapted model decodes without the cache, even
    when asked for it, as lm-eval does."""
    model, tokenizer = load_tiny()
    torch.manual_seed(0)
    adapted = prompt_tuning(model, PromptTuningOptions(num_virtual_tokens=10, init="random"))
    adapted.eval()
    with torch.no_grad():
        for parameter in adapted.parameters():
            if parameter.requires_grad:
                parameter.normal_(0.0, 1.0)  # a soft prompt that changes what comes next
        ids = tokenizer(PROMPT, return_tensors="pt").input_ids
        generated = adapted.generate(input_ids=ids, max_new_tokens=8, do_sample=False,
                                     use_cache=True)
        greedy = ids
        for _ in range(8):
            step = adapted(input_ids=greedy).logits[:, -1].argmax(-1, keepdim=True)
            greedy = torch.cat([greedy, step], 1)
    assert torch.equal(generated, greedy)


def test_prompt_tuning_scores_the_input_positions_for_lm_eval(load_tiny):
    """lm-eval reads logits by input position; peft prepends the soft prompt's positions."""
    from lm_eval.api.instance import Instance

    from harness.contract import BuildContext, DataSource
    from harness.lm import hf_lm

    model, tokenizer = load_tiny()
    adapted = prompt_tuning(model, PromptTuningOptions(num_virtual_tokens=5)).eval()
    context, continuation = "the cat sat on the", " mat"
    ids = tokenizer(context + continuation, return_tensors="pt").input_ids
    with torch.no_grad():
        logits = adapted(input_ids=ids).logits
        embeds = torch.cat([adapted.get_prompt(batch_size=1), model.get_input_embeddings()(ids)], 1)
        full = model(inputs_embeds=embeds).logits
    assert logits.shape[1] == ids.shape[1]
    assert torch.equal(logits, full[:, 5:])

    context_len = len(tokenizer(context).input_ids)
    expected = torch.log_softmax(logits[0, context_len - 1:-1], -1).gather(
        1, ids[0, context_len:, None]).sum()
    ctx = BuildContext(models=[], options=None, task=None, task_options=None, seed=0, device="cpu",
                       batch_size=1, workdir=None, data=DataSource("embedded"))
    lm = hf_lm(adapted, tokenizer, ctx)
    [(loglikelihood, _)] = lm.loglikelihood([Instance("loglikelihood", {}, (context, continuation), 0)])
    assert loglikelihood == pytest.approx(float(expected), abs=1e-4)
    with torch.no_grad():
        generated = adapted.generate(input_ids=ids, max_new_tokens=4, do_sample=False)
    assert torch.equal(generated[0, :ids.shape[1]], ids[0])
    assert int(generated[0, ids.shape[1]]) == int(logits[0, -1].argmax())
