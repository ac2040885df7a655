"""The key-value arithmetic world of CALM's first experiment (Bansal et al. 2024, Table 1)
at tiny scale, and the two zoo models trained in it.

A seeded world of `N_KEYS` three-letter keys, each with a small integer value (1-5) and
each ONE token of the world's tokenizer (the paper's keys are strings of the model's
vocabulary). Three datasets share one expression generator (3-4 operands joined by + - *,
evaluated with the usual precedence), with the paper's formats:

- kv_substitution: "uww+lkr*agx=" -> "2+3*5"   (the augmenting model's skill)
- numeric_arithmetic: "2+3*5=" -> "17"          (the anchor's skill)
- kv_arithmetic: "uww+lkr*agx=" -> "17"         (the composition, learnt by neither)

(no spaces: digits, operators and "=" are one token each, and short sequences train fast
on two CPU cores)

Why one token per key: the anchor may read nothing of the augmenting model later than a
key before the "=" (the causal cross-attention), so the value must be in the augmenting
model's states at the key's own position. A key spelt over two tokens is only complete at
its last one, and a small model trained to *emit* values looks the value up where it
writes it; a one-token key is looked up where it stands (`probe_values` measures it).

The keys fall in three disjoint sets: `COMPOSITION_SHARE` form the composition set (CALM's
training examples are KV arithmetic over those keys only), `VALIDATION_SHARE` the
validation set (model selection, never scored), and every evaluation of a dataset with
keys uses the rest (held-out keys). Expressions are split between training and evaluation
by a hash of their text, so no evaluated expression was trained on by a zoo model or by
CALM.

`harness-zoo/kv-augmenting` is trained on kv_substitution over every key (it memorises the
mapping); `harness-zoo/kv-anchor` on numeric_arithmetic only. Both are small GPT-2s
(learned absolute positions: the cross-attention has no positions of its own, so the
anchor finds "the augmenting state at my position" through them), trained
deterministically on first use (seeded initialisation and data order, one thread) and
cached like every zoo model (this module's `RECIPES`). The sizes and budgets are the smallest we found that learn
their skill on two CPU cores (about 6 and 10 minutes on a shared machine); the anchor, like
the paper's (m_B solves 73.7% of numeric arithmetic), is far from perfect at it.
"""

from __future__ import annotations

import hashlib
import json
import random
import string
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from harness.zoo.recipe import Prepared, ZooRecipe, ZooTraining

if TYPE_CHECKING:
    from harness.training.options import Optimisation

WORLD_SEED = 9
N_KEYS = 600
KEY_LENGTH = 3
VALUES = range(1, 6)
OPERANDS = (3, 4)
OPERATORS = "+-*"
COMPOSITION_SHARE = 0.2
VALIDATION_SHARE = 0.1
EVAL_BUCKET = 5  # expressions whose text hashes to 0 mod this are evaluation-only
DATASETS = ("kv_substitution", "numeric_arithmetic", "kv_arithmetic")
SYMBOLS = "0123456789+-*="
SPECIALS = ("<unk>", "<s>", "</s>", "<pad>")
MAX_POSITIONS = 64

Dataset = Literal["kv_substitution", "numeric_arithmetic", "kv_arithmetic"]
Split = Literal["train", "composition", "validation", "test"]


@dataclass(frozen=True)
class KeyValueWorld:
    keys: tuple[str, ...]
    values: dict[str, int]
    composition_keys: tuple[str, ...]
    validation_keys: tuple[str, ...]
    held_out_keys: tuple[str, ...]


@cache
def world(seed: int = WORLD_SEED) -> KeyValueWorld:
    rng = random.Random(seed)
    keys: list[str] = []
    while len(keys) < N_KEYS:
        key = "".join(rng.choice(string.ascii_lowercase) for _ in range(KEY_LENGTH))
        if key not in keys:
            keys.append(key)
    values = {key: rng.choice(VALUES) for key in keys}
    composition = round(COMPOSITION_SHARE * N_KEYS)
    validation = composition + round(VALIDATION_SHARE * N_KEYS)
    return KeyValueWorld(tuple(keys), values, tuple(keys[:composition]),
                         tuple(keys[composition:validation]), tuple(keys[validation:]))


def _is_evaluation_text(text: str) -> bool:
    return int(hashlib.sha256(text.encode()).hexdigest(), 16) % EVAL_BUCKET == 0


def _example(dataset: Dataset, operands: list[str], operators: list[str],
             kv: KeyValueWorld) -> dict[str, str]:
    keyed = dataset != "numeric_arithmetic"
    numbers = [str(kv.values[o]) if keyed else o for o in operands]
    expression = "".join(sum(([op, n] for op, n in zip(operators, operands[1:])), [operands[0]]))
    numeric = "".join(sum(([op, n] for op, n in zip(operators, numbers[1:])), [numbers[0]]))
    answer = str(eval(numeric))  # digits and + - * only: built above, never user input
    target = numeric if dataset == "kv_substitution" else answer
    return {"prompt": f"{expression}=", "target": target}


def examples(dataset: Dataset, split: Split, count: int,
             seed: int = WORLD_SEED) -> list[dict[str, str]]:
    """`count` distinct examples of `dataset`, deterministic in (dataset, split, seed).

    split "train": what a zoo model learns its skill from (every key, training expressions);
    "composition": CALM's training set (kv_arithmetic over the composition keys);
    "validation": kv_arithmetic over the validation keys (model selection, never scored);
    "test": evaluation expressions, over the held-out keys for datasets with keys.
    """
    kv = world(seed)
    if split in ("composition", "validation") and dataset != "kv_arithmetic":
        raise ValueError(f"the {split} set is KV arithmetic")
    pool = {"train": kv.keys, "composition": kv.composition_keys,
            "validation": kv.validation_keys, "test": kv.held_out_keys}[split]
    if dataset == "numeric_arithmetic":
        pool = tuple(str(v) for v in VALUES)
    rng = random.Random(f"{seed}/{dataset}/{split}")
    wanted_evaluation = split == "test"
    chosen: dict[str, dict[str, str]] = {}
    while len(chosen) < count:
        size = rng.choice(OPERANDS)
        operands = [rng.choice(pool) for _ in range(size)]
        operators = [rng.choice(OPERATORS) for _ in range(size - 1)]
        example = _example(dataset, operands, operators, kv)
        if _is_evaluation_text(example["prompt"]) == wanted_evaluation:
            chosen.setdefault(example["prompt"], example)
    return list(chosen.values())


# ------------------------------------------------------------------------- zoo models

@dataclass(frozen=True)
class Curriculum(ZooTraining):
    """How a key-value zoo model is trained: `examples` training examples of `dataset`,
    batches drawn with replacement (a generator seeded with the recipe's seed), the loss on
    the target tokens; AdamW, a 5% warm-up then cosine decay, gradients clipped to norm 1."""

    dataset: Dataset
    examples: int
    steps: int
    batch_size: int
    lr: float
    weight_decay: float = 0.0
    intermediate_factor: int = 4

    @property
    def optimisation(self) -> Optimisation:
        from harness.training.options import Optimisation

        return Optimisation(steps=self.steps, lr=self.lr, weight_decay=self.weight_decay,
                            schedule="cosine", warmup_ratio=0.05, clip_norm=1.0)

    def identity(self) -> dict[str, Any]:
        return {"training": {
            "curriculum": asdict(self),
            "world": [WORLD_SEED, N_KEYS, KEY_LENGTH, list(VALUES), list(OPERANDS), OPERATORS,
                      COMPOSITION_SHARE, VALIDATION_SHARE, EVAL_BUCKET], "symbols": SYMBOLS}}

    def prepare(self, recipe: ZooRecipe) -> Prepared:
        import torch
        from transformers import AutoModelForCausalLM

        tokenizer = kv_tokenizer()
        torch.manual_seed(recipe.seed)
        model = AutoModelForCausalLM.from_config(model_config(
            recipe.architecture, tokenizer, recipe.hidden_size, recipe.layers, recipe.heads,
            self.intermediate_factor))
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        ids, labels = _encode(tokenizer, examples(self.dataset, "train", self.examples))
        order = torch.Generator().manual_seed(recipe.seed)

        def loss(step: int) -> Any:
            rows = torch.randint(len(ids), (self.batch_size,), generator=order)
            batch_ids, batch_labels = ids[rows], labels[rows]
            width = int((batch_ids != tokenizer.pad_token_id).sum(1).max())
            batch_ids, batch_labels = batch_ids[:, :width], batch_labels[:, :width]
            return model(input_ids=batch_ids, attention_mask=batch_ids != tokenizer.pad_token_id,
                         labels=batch_labels).loss

        return Prepared(model, (tokenizer,), loss)

    def finish(self, recipe: ZooRecipe, prepared: Prepared, final_loss: float, out: Path) -> None:
        (out / "zoo_training.json").write_text(json.dumps(
            self.identity()["training"] | {"final_loss": final_loss}, indent=2, sort_keys=True))


# GPT-2's learned absolute positions let the cross-attention match an anchor position to the
# same augmenting position (it has no positions of its own).
RECIPES = (
    ZooRecipe("kv-augmenting", "gpt2", "kv", 618, 64, 4, 4, 4, 0,
              "trained to memorise key-value substitution over every key (CALM's m_A)",
              Curriculum("kv_substitution", examples=20_000, steps=600, batch_size=128, lr=5e-3)),
    ZooRecipe("kv-anchor", "gpt2", "kv", 618, 64, 4, 4, 4, 0,
              "trained on numeric arithmetic only (CALM's anchor m_B)",
              Curriculum("numeric_arithmetic", examples=14_000, steps=1500, batch_size=128,
                         lr=3e-3)),
)


def kv_tokenizer() -> Any:
    """Every key is one token (a word of the vocabulary, as the paper's keys are), digits,
    operators and "=" one token each, plus Llama-style specials; no BOS added."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate([*SPECIALS, *SYMBOLS, *world().keys])}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Split(Regex("[a-z]+|."), "isolated")
    raw.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="<pad>",
                                   model_max_length=MAX_POSITIONS)


def model_config(architecture: str, tokenizer: Any, hidden_size: int, layers: int, heads: int,
            intermediate_factor: int) -> Any:
    from transformers import GPT2Config, LlamaConfig

    special = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
               "pad_token_id": tokenizer.pad_token_id}
    if architecture == "gpt2":
        return GPT2Config(vocab_size=len(tokenizer), n_embd=hidden_size, n_layer=layers,
                          n_head=heads, n_inner=hidden_size * intermediate_factor,
                          n_positions=MAX_POSITIONS, resid_pdrop=0.0, embd_pdrop=0.0,
                          attn_pdrop=0.0, tie_word_embeddings=False, **special)
    return LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden_size,
                       intermediate_size=hidden_size * intermediate_factor,
                       num_hidden_layers=layers, num_attention_heads=heads,
                       num_key_value_heads=heads, max_position_embeddings=MAX_POSITIONS,
                       tie_word_embeddings=False, **special)


def _encode(tokenizer: Any, rows: list[dict[str, str]]) -> tuple[Any, Any]:
    """Right-padded ids and target-only labels (prompt and padding ignored), EOS appended."""
    import torch

    encoded = []
    for row in rows:
        prompt = tokenizer(row["prompt"]).input_ids
        target = tokenizer(row["target"]).input_ids + [tokenizer.eos_token_id]
        encoded.append((prompt + target, [-100] * len(prompt) + target))
    width = max(len(i) for i, _ in encoded)
    ids = torch.full((len(encoded), width), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((len(encoded), width), -100, dtype=torch.long)
    for position, (i, l) in enumerate(encoded):
        ids[position, :len(i)] = torch.tensor(i)
        labels[position, :len(l)] = torch.tensor(l)
    return ids, labels


# ------------------------------------------------------------------------- value probe

def probe_values(model: Any, tokenizer: Any, layers: list[int], examples_per_split: int = 400,
                 steps: int = 300, seed: int = WORLD_SEED) -> dict[int, float]:
    """How well a linear probe reads a key's value from `model`'s states at the key's own
    position, per layer output (0-indexed): fitted on expressions over the composition keys,
    scored (accuracy) on expressions over the held-out keys. This is what CALM needs: the
    anchor may read nothing later than the key before the "=", and it learns its
    connections on the composition keys only."""
    import torch

    features = {split: _key_states(model, tokenizer, layers, split, examples_per_split, seed)
                for split in ("composition", "test")}
    accuracy = {}
    for layer in layers:
        (train_x, train_y), (test_x, test_y) = (features[s][layer] for s in ("composition", "test"))
        mean, scale = train_x.mean(0), train_x.std(0) + 1e-6
        generator = torch.Generator().manual_seed(seed)
        probe = torch.nn.Linear(train_x.shape[1], len(VALUES))
        with torch.no_grad():
            probe.weight.copy_(torch.randn(probe.weight.shape, generator=generator) * 0.01)
            probe.bias.zero_()
        optimizer = torch.optim.Adam(probe.parameters(), lr=0.05)
        for _ in range(steps):
            loss = torch.nn.functional.cross_entropy(probe((train_x - mean) / scale), train_y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            predicted = probe((test_x - mean) / scale).argmax(-1)
        accuracy[layer] = float((predicted == test_y).float().mean())
    return accuracy


def _key_states(model: Any, tokenizer: Any, layers: list[int], split: Split, count: int,
                seed: int) -> dict[int, tuple[Any, Any]]:
    """(states, value index) at every key position of `count` KV expressions of `split`."""
    import torch

    kv = world(seed)
    rows = examples("kv_arithmetic", split, count, seed)
    blocks = _blocks(model)
    captured: dict[int, Any] = {}
    handles = [blocks[layer].register_forward_hook(
        lambda module, args, output, layer=layer: captured.__setitem__(
            layer, output[0] if isinstance(output, tuple) else output)) for layer in layers]
    states: dict[int, list[Any]] = {layer: [] for layer in layers}
    labels: list[int] = []
    try:
        for row in rows:
            ids = tokenizer(row["prompt"], return_tensors="pt").input_ids
            with torch.no_grad():
                model(input_ids=ids)
            tokens = tokenizer.convert_ids_to_tokens(ids[0])
            positions = [i for i, token in enumerate(tokens) if token in kv.values]
            labels += [kv.values[tokens[i]] - min(VALUES) for i in positions]
            for layer in layers:
                states[layer].append(captured[layer][0, positions].float())
    finally:
        for handle in handles:
            handle.remove()
    target = torch.tensor(labels)
    return {layer: (torch.cat(states[layer]), target) for layer in layers}


def _blocks(model: Any) -> Any:
    """The transformer blocks of a zoo causal LM (GPT-2 `transformer.h`, Llama `model.layers`)."""
    decoder = model.get_decoder()
    return decoder.h if hasattr(decoder, "h") else decoder.layers
