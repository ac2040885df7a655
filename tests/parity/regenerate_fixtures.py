"""Regenerate tests/parity/fixtures/ by running the official code on fixed tiny inputs.

    python tests/parity/regenerate_fixtures.py --packllm /tmp/PackLLM --aligner /tmp/Aligner \
        --calm /tmp/calm

(each defaults to its HARNESS_PARITY_* variable; a method without a checkout is left as it
is). The fixtures keep what the released code computed (weights, logits, token maps, the
checkpoints it writes) and the inputs it computed them on, numbers only, never its source;
`test_*_fixtures.py` compare our code with them in CI, where no checkout is present. The
inputs are seeded and machine independent (`parity_support.seeded_`), so a rerun on
another machine changes the stored numbers by float rounding at most.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests folder, as pytest has it

from parity.parity_support import save_fixture  # noqa: E402

# PackLLM's rules on replayed member logits: sequences, positions, vocabulary, member pool.
SEQUENCES, POSITIONS, VOCAB, POOL, EOS = 3, 8, 20, 4, 0
OPTION_ITEMS = 4  # MMLU items whose options the official protocol scores


class _Replay(torch.nn.Module):
    """An official pack member that answers with fixed logits (one row more than the
    official code's shift drops)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = torch.cat([logits, torch.zeros(1, logits.shape[-1])])[None]

    def forward(self, input_ids: torch.Tensor, **_: Any) -> Any:
        from transformers.modeling_outputs import CausalLMOutputWithPast

        return CausalLMOutputWithPast(logits=self.logits[:, :input_ids.shape[1]])


class _Vocabulary:
    """What the official forward asks of a tokenizer: its size and EOS."""

    def __init__(self, size: int, eos: int) -> None:
        self.size, self.eos_token_id = size, eos

    def __len__(self) -> int:
        return self.size


def packllm_rule_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """(ids [S, T+1] with two EOS targets each, member logits [S, POOL, T, V]): members
    share a sharp common part, so mixing them can lower the prompt NLL."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1, VOCAB, (SEQUENCES, POSITIONS + 1), generator=generator)
    ids[:, [3, 6]] = EOS
    common = torch.randn(SEQUENCES, 1, POSITIONS, VOCAB, generator=generator) * 2
    return ids, common + torch.randn(SEQUENCES, POOL, POSITIONS, VOCAB, generator=generator) * 2


def packllm(checkout: Path) -> Path:
    os.environ["HARNESS_PARITY_PACKLLM"] = str(checkout)
    from parity import test_packllm as live
    from parity.packllm_support import (CASES, MARKERS, official_mmlu_items, question_texts,
                                        seeded_lm)

    from harness.contract import ModelRef
    from harness.fusion._alignment import special_ids, vocabulary
    from harness.fusion._pack_lm import Member, Pack
    from harness.models.loading import load_tokenizer

    official = live.load_official()
    tensors: dict[str, torch.Tensor] = {}
    ids, members = packllm_rule_inputs()
    tensors |= {"rules/ids": ids, "rules/logits": members}
    vocabulary_only = _Vocabulary(VOCAB, EOS)

    def run(fusion: str, models: list[Any], row: int) -> tuple[torch.Tensor, torch.Tensor]:
        pack = live._official_pack(official, fusion, models, [vocabulary_only] * len(models),
                                   [None] * len(models))
        fused, printed = live._official_forward(pack, ids[row:row + 1])
        return live._official_weights(fusion, printed, len(models)), fused

    for fusion, count in CASES:
        runs = [run(fusion, [_Replay(members[row, k]) for k in range(count)], row)
                for row in range(SEQUENCES)]
        tensors[f"rules/{fusion}/{count}/weights"] = torch.stack([w for w, _ in runs])
        tensors[f"rules/{fusion}/{count}/fused"] = torch.stack([f for _, f in runs])
    tensors["ties/opt/weights"] = torch.stack([  # three copies of one member
        run("opt", [_Replay(members[row, 0])] * 3, row)[0] for row in range(SEQUENCES)])

    names = ("tiny-llama", "tiny-gpt2")
    tokenizers = {name: load_tokenizer(ModelRef(f"harness-zoo/{name}")) for name in names}
    for reference, expert in (names, names[::-1]):
        tensors[f"mined/{reference}/{expert}"] = torch.tensor(live._official_map(
            official, tokenizers[reference], tokenizers[expert],
            (MARKERS[reference], MARKERS[expert])), dtype=torch.int32)
    meta: dict[str, Any] = {
        "vocabularies": {name: vocabulary(tokenizers[name]) for name in names},
        "special_ids": {name: special_ids(tokenizers[name]) for name in names}}

    # The reference-tokenizer choice and option scoring on a Llama + GPT-2 pack.
    models = [seeded_lm("llama", len(tokenizers["tiny-llama"]), seed=11),
              seeded_lm("gpt2", len(tokenizers["tiny-gpt2"]), seed=12)]
    pair = [tokenizers[name] for name in names]
    texts = question_texts()[::3]  # a third keeps the test short; each tokenizer wins some
    choosing = live._official_pack(official, "sim", models, pair, [None, None])
    with contextlib.redirect_stdout(io.StringIO()):
        meta["reference_choice"] = {"texts": texts,
                                    "chosen": [choosing.select_tokenizer([t]) for t in texts]}
    meta["options"] = {}
    for reference in (0, 1):
        order = [reference, 1 - reference]
        ours = Pack([Member(f"m{k}", models[k], pair[k]) for k in order], "cpu")
        maps = [None, {i: int(j) for i, j in enumerate(ours.index(0, 1).tolist())}]
        items = []
        for question, options in official_mmlu_items(OPTION_ITEMS):
            data = live._official_options(official, pair[reference], question, options)
            inputs = data.tensorized_inputs
            items.append([[row[:int((kinds == 1).nonzero()[0])].tolist(), row[kinds == 1].tolist()]
                          for row, kinds in zip(inputs["input_ids"], inputs["token_type_ids"])])
        losses = {}
        for fusion in ("sim", "opt"):
            theirs = live._official_pack(official, fusion, [models[k] for k in order],
                                         [pair[k] for k in order], maps)
            runner = official.model.MetaICLModel.__new__(official.model.MetaICLModel)
            runner.model, runner.accelerator = theirs, theirs.accelerator
            with contextlib.redirect_stdout(io.StringIO()):
                losses[fusion] = [runner.do_inference(live._official_options(
                    official, pair[reference], question, options))
                    for question, options in official_mmlu_items(OPTION_ITEMS)]
        meta["options"][str(reference)] = {"pairs": items, "losses": losses}
    return save_fixture("packllm", tensors, meta)


def aligner(checkout: Path) -> Path:
    """Per dtype and prefix length: the official model's logits with zero gates (the base
    model), the official checkpoint its `adapter_state_from_state_dict` writes after the
    adapter is randomised, and the adapted logits, full and through its KV cache."""
    os.environ["HARNESS_PARITY_ALIGNER"] = str(checkout)
    from parity import test_aligner as live
    from parity.aligner_support import fixed_ids, hf_llama

    official = live.load_official_aligner()
    ids, tensors = fixed_ids(), {}
    for dtype in (torch.float32, torch.float64):
        for num_tokens in (1, 3):
            case = f"{str(dtype).removeprefix('torch.')}/{num_tokens}"
            lit = live._lit_from_hf(official, hf_llama(dtype), num_tokens)
            with torch.no_grad():
                tensors[f"{case}/base"] = lit(ids)
                live._randomise_official_adapter(lit, seed=num_tokens)
                checkpoint = official.adapter_state_from_state_dict(lit.state_dict())
                tensors |= {f"{case}/checkpoint/{key}": value for key, value in checkpoint.items()}
                tensors[f"{case}/adapted"] = lit(ids)
                tensors[f"{case}/cached"] = live._official_cached_logits(lit, ids)
    return save_fixture("aligner", tensors, {"ids": ids.tolist()})


def calm(checkout: Path) -> Path:
    """The official `CALM` over `calm_parity_support.seeded_pair()`, its cross-attention
    hooks drawn by `seeded_hook_`: its logits on fixed ids and on the same ids with the
    last token changed."""
    import tempfile

    os.environ["HARNESS_PARITY_CALM"] = str(checkout)
    from parity.calm_parity_support import (CONNECTIONS, HEADS, fixed_tokens, seeded_hook_,
                                            seeded_pair)
    from parity.parity_support import import_official
    from parity.test_calm import _tuple_outputs

    (official,) = import_official(checkout, ["model.calm"])
    with tempfile.TemporaryDirectory() as folder:
        paths = [str(Path(folder) / name) for name in ("anchor", "augmenting")]
        for model, path in zip(seeded_pair(), paths):
            model.save_pretrained(path)
        config = official.CALMConfig(anchor_model=paths[0], aug_model=paths[1],
                                     connections=[list(c) for c in CONNECTIONS], num_heads=HEADS)
        model = official.CALM(config).eval()
    for hook in model.cross_attention_hooks:
        hook.forward = _tuple_outputs(hook.forward)
    for index, hook in enumerate(model.cross_attention_hooks):
        seeded_hook_(hook, index)
    with torch.no_grad():
        tensors = {name: model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
                   for name, ids in zip(("logits", "changed_logits"), fixed_tokens())}
    return save_fixture("calm", tensors, {"hook_parameters": [
        sorted(name for name, _ in hook.named_parameters()) for hook in model.cross_attention_hooks]})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for method, variable in (("packllm", "HARNESS_PARITY_PACKLLM"),
                             ("aligner", "HARNESS_PARITY_ALIGNER"),
                             ("calm", "HARNESS_PARITY_CALM")):
        parser.add_argument(f"--{method}", type=Path, default=os.environ.get(variable),
                            help=f"checkout of the official code (default: ${variable})")
    arguments = parser.parse_args(argv)
    torch.set_num_threads(1)
    for method, write in (("packllm", packllm), ("aligner", aligner), ("calm", calm)):
        checkout = getattr(arguments, method)
        if checkout is None:
            print(f"{method}: no checkout given, fixture left as it is")
            continue
        path = write(checkout.expanduser())
        print(f"{method}: wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
