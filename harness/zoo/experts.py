"""Zoo experts: tiny zoo models pretrained on synthetic letter runs.

The random zoo models answer nothing, so a leaderboard of them shows no difference between
methods. An expert is a zoo recipe (architecture, tokenizer, seed) whose freshly built
weights are then pretrained for a few hundred steps on plain text of its corpus. The runs
are letters of the alphabet, wrapping after z:

- "ascending": forwards, one letter at a time ("w x y z a b"),
- "descending": backwards ("b a z y x w"),
- "skipping": forwards two letters at a time ("a c e g").

`expert-ascending` and `expert-descending` know one of the first two domains each. The two
share every token but contradict each other: after "... f" an ascending expert is sure of
"g", a descending one of "e". Each finds the other domain's text improbable (high
perplexity), which is exactly the signal PackLLM weights members by, while a uniform
ensemble averages a confident right answer with a confident wrong one.

`overlap-ascending` and `overlap-descending` (and their other-seed twins `-s1`, `-s2`) know
one of those domains each *and* half know the shared skipping domain: their skipping runs
were copied by a careless scribe who, at each step and more often than not, slips to three
letters ahead (the ascending expert's corpus) or four (the descending one's). Alone, each
answers a skipping run with its own slip; the right step is the one both give real weight
to, so fusing their logits finds it where choosing one expert cannot (PackLLM against
top-1 routing), and perplexity weights still silence the wrong expert on the other domains
(PackLLM against the uniform ensemble).

`expert-forms` knows the ascending alphabet as questions and answers ("c d e f ?") in three
answer forms: mostly the bare letter, sometimes "the answer is g ." or "after f comes g .".
Greedy decoding gives the bare form; teaching it another form is alignment in the Aligner
paper's sense (form, not knowledge).

The `mixed_domains` and `answer_form` tasks ask for what these corpora teach. Training is
deterministic (fixed seeds, data drawn from a seeded generator) and takes seconds on a CPU
core; the result is cached like every zoo model. The recipes are this module's `RECIPES`.
"""

from __future__ import annotations

import random
import string
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from harness.zoo.recipe import Prepared, ZooRecipe, ZooTraining

if TYPE_CHECKING:
    from harness.training.options import Optimisation

ALPHABET = string.ascii_lowercase
STEPS = {"ascending": 1, "descending": -1, "skipping": 2}
DOMAINS = tuple(STEPS)


@dataclass(frozen=True, kw_only=True)
class Pretraining(ZooTraining):
    """A pretraining budget spent on a random zoo model (the recipe's architecture and
    tokenizer); subclasses say which texts it is spent on. AdamW at a constant rate (torch's
    default weight decay), no clipping; batches of texts drawn from a generator seeded with
    `seed`, the loss over every token but padding."""

    steps: int = 300
    batch_size: int = 32
    lr: float = 3e-3
    seed: int = 0
    ends_documents: ClassVar[bool] = False  # each text is a document closed by EOS

    def text(self, rng: random.Random) -> str:
        raise NotImplementedError

    @property
    def optimisation(self) -> Optimisation:
        from harness.training.options import Optimisation

        return Optimisation(steps=self.steps, lr=self.lr)

    def identity(self) -> dict[str, Any]:
        return {"pretraining": asdict(self)}

    def prepare(self, recipe: ZooRecipe) -> Prepared:
        import torch

        from harness.zoo.builders import random_model

        model, companions = random_model(recipe)
        tokenizer = companions[0]
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        end = [tokenizer.eos_token_id] if self.ends_documents else []
        rng = random.Random(self.seed)
        torch.manual_seed(self.seed)

        def loss(step: int) -> Any:
            texts = [self.text(rng) for _ in range(self.batch_size)]
            batch = _right_padded([tokenizer(text)["input_ids"] + end for text in texts], pad)
            labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
            logits = model(**batch).logits[:, :-1]
            return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                     labels[:, 1:].reshape(-1), ignore_index=-100)

        return Prepared(model, companions, loss)


@dataclass(frozen=True, kw_only=True)
class DomainPretraining(Pretraining):
    """Runs of one domain."""

    domain: str
    min_letters: int = 4
    max_letters: int = 14

    def text(self, rng: random.Random) -> str:
        return " ".join(letter_run(self.domain, rng.randrange(len(ALPHABET)),
                                   rng.randint(self.min_letters, self.max_letters)))


@dataclass(frozen=True, kw_only=True)
class OverlapPretraining(DomainPretraining):
    """Runs of one domain and, as often, skipping runs in which each step is `slip` letters
    instead of two with probability `slip_rate`."""

    slip: int
    slip_rate: float = 0.6
    shared_share: float = 0.5

    def text(self, rng: random.Random) -> str:
        if rng.random() >= self.shared_share:
            return super().text(rng)
        letter = rng.randrange(len(ALPHABET))
        letters = [ALPHABET[letter]]
        for _ in range(rng.randint(self.min_letters, self.max_letters) - 1):
            letter += self.slip if rng.random() < self.slip_rate else STEPS["skipping"]
            letters.append(ALPHABET[letter % len(ALPHABET)])
        return " ".join(letters)


# An answer form: a template over the run's last letter and the answer, and its share.
ANSWER_FORMS: tuple[tuple[str, float], ...] = (
    ("{answer}", 0.6),
    ("the answer is {answer} .", 0.2),
    ("after {last} comes {answer} .", 0.2),
)


@dataclass(frozen=True, kw_only=True)
class AnswerFormPretraining(Pretraining):
    """Questions "c d e f ?" (ascending runs of 3-8 letters) answered in one of `forms`,
    drawn by their shares; each question and answer is one document."""

    forms: tuple[tuple[str, float], ...] = ANSWER_FORMS
    min_letters: int = 3
    max_letters: int = 8
    steps: int = 600
    ends_documents: ClassVar[bool] = True

    def text(self, rng: random.Random) -> str:
        run = letter_run("ascending", rng.randrange(len(ALPHABET)),
                         rng.randint(self.min_letters, self.max_letters))
        answer = letter_run("ascending", ALPHABET.index(run[-1]), 2)[1]
        templates, shares = zip(*self.forms)
        form = rng.choices(templates, weights=shares)[0]
        return " ".join(run) + " ? " + form.format(last=run[-1], answer=answer)


OVERLAP_SEEDS = (0, 1, 2)


def overlap_name(domain: str, seed: int) -> str:
    """Zoo name of an overlap expert: seed 0 is the plain name, others end in -s<seed>."""
    return f"overlap-{domain}" + (f"-s{seed}" if seed else "")


def _expert(name: str, base: str, training: Pretraining, description: str) -> ZooRecipe:
    """A recipe of `base`'s architecture and tokenizer (tiny-llama or tiny-gpt2), pretrained."""
    architecture, tokenizer, vocab, kv_heads = {"tiny-llama": ("llama", "metaspace", 640, 2),
                                                "tiny-gpt2": ("gpt2", "bytelevel", 768, 4)}[base]
    return ZooRecipe(name, architecture, tokenizer, vocab, 64, 4, 4, kv_heads, training.seed,
                     description, training)


RECIPES = (
    _expert("expert-ascending", "tiny-llama", DomainPretraining(domain="ascending"),
            "tiny-llama pretrained on the alphabet forwards (the mixed_domains task)"),
    _expert("expert-descending", "tiny-gpt2", DomainPretraining(domain="descending"),
            "tiny-gpt2 pretrained on the alphabet backwards (the mixed_domains task)"),
    _expert("expert-forms", "tiny-llama", AnswerFormPretraining(),
            "tiny-llama pretrained on alphabet questions answered in three forms "
            "(the answer_form task)"),
    *(_expert(overlap_name(domain, seed), base, OverlapPretraining(domain=domain, slip=slip, seed=seed),
              f"{base} pretrained on the alphabet {domain} and on skipping runs copied with "
              f"slips (seed {seed}; the mixed_domains task's overlap)")
      for seed in OVERLAP_SEEDS
      for domain, slip, base in (("ascending", 3, "tiny-llama"), ("descending", 4, "tiny-gpt2"))),
)


def letter_run(domain: str, start: int, length: int) -> list[str]:
    """`length` letters of the alphabet from index `start` in the domain's step, wrapping
    around. (The task plugin draws its documents on its own: plugins do not import the zoo,
    and a benchmark should not share code with a pretraining corpus.)"""
    if domain not in STEPS:
        raise ValueError(f"unknown domain {domain!r}; domains: {', '.join(DOMAINS)}")
    return [ALPHABET[(start + STEPS[domain] * i) % len(ALPHABET)] for i in range(length)]


def _right_padded(encoded: list[list[int]], pad: int) -> dict[str, Any]:
    import torch

    width = max(len(ids) for ids in encoded)
    ids = torch.full((len(encoded), width), pad, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, tokens in enumerate(encoded):
        ids[row, :len(tokens)] = torch.tensor(tokens)
        mask[row, :len(tokens)] = 1
    return {"input_ids": ids, "attention_mask": mask}
