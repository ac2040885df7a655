"""FUSE prompt discovery: a discrete instruction that lowers a pack's answer loss.

The prompt is a sequence of the primary model's tokens. Every member of the pack reads it
before each training example (its own tokens of the prompt's text, through a FUSE bridge
for members with another tokenizer), and the objective is the sum over members of their
mean answer loss (negative log-likelihood of the target tokens). The primary model's
gradient is exact backprop; the others reach the primary model's tokens through FUSE.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from harness.contract import BuildContext, MethodReport
from harness.fuse._bridge import Bridge, splice
from harness.fuse._caption import PrimaryLM
from harness.fuse._search import search
from harness.fuse._words import word_start_token
from harness.training.cache import fit_cache, fit_fingerprint, read_record, write_record
from harness.training.data import data_digest, training_examples

SEPARATOR = "\n"  # between the prompt and the example, at discovery and evaluation alike
IGNORE = -100


@dataclass
class Member:
    """One model of the pack, reached from the primary model's tokens through `bridge`."""

    model: Any
    tokenizer: Any
    bridge: Bridge

    def __post_init__(self) -> None:
        self.embeddings = self.model.get_input_embeddings().weight
        self.device = self.embeddings.device
        self.lead = leading_tokens(self.tokenizer)
        pad = self.tokenizer.pad_token_id
        self.pad = pad if pad is not None else (self.tokenizer.eos_token_id or 0)


def leading_tokens(tokenizer: Any) -> list[int]:
    """The start token the tokenizer puts before a text by default ([] for GPT-2)."""
    ids = tokenizer("a")["input_ids"]
    bos = tokenizer.bos_token_id
    return [bos] if bos is not None and ids and ids[0] == bos else []


def encode_example(tokenizer: Any, example: dict[str, str]) -> tuple[list[int], list[int]]:
    """(context ids, target ids) of SEPARATOR + prompt + target, the target split off the
    joint encoding as lm-eval splits a continuation."""
    context = tokenizer(SEPARATOR + example["prompt"], add_special_tokens=False)["input_ids"]
    whole = tokenizer(SEPARATOR + example["prompt"] + example["target"],
                      add_special_tokens=False)["input_ids"]
    return context, whole[len(context):]


class AnswerObjective:
    """Sum over the pack of each member's mean target-token NLL on `examples`, the prompt
    (rows of primary-model ids) before each example (an `Objective` for `search`)."""

    def __init__(self, members: Sequence[Member], examples: Sequence[dict[str, str]]) -> None:
        self.members = list(members)
        primary = self.members[0]
        self.primary = PrimaryLM(primary.model, primary.tokenizer,
                                 primary.lead or [primary.tokenizer.eos_token_id or 0])
        self.allowed = self.primary.allowed
        self.encoded = [[encode_example(m.tokenizer, e) for e in examples] for m in self.members]

    def _member_loss(self, index: int, prompts: Sequence[Sequence[int]],
                     x: torch.Tensor | None = None) -> torch.Tensor:
        """(n,) member `index`'s mean answer NLL under each prompt; with `x` (n, L, d) the
        prompt's input embeddings come from it (differentiable)."""
        member, encoded = self.members[index], self.encoded[index]
        rows, labels = [], []
        for prompt in prompts:
            for context, target in encoded:
                lead = member.lead + list(prompt) + context
                rows.append(lead + target)
                labels.append([IGNORE] * len(lead) + target)
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), member.pad, dtype=torch.long)
        targets = torch.full((len(rows), width), IGNORE, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for number, (row, label) in enumerate(zip(rows, labels)):
            ids[number, :len(row)], targets[number, :len(row)] = torch.tensor(row), torch.tensor(label)
            attention[number, :len(row)] = 1
        ids, targets, attention = ids.to(member.device), targets.to(member.device), attention.to(member.device)
        inputs = member.embeddings[ids]
        if x is not None:
            start, examples = len(member.lead), len(encoded)
            prompt_mask = torch.zeros_like(attention, dtype=torch.bool)
            for number, prompt in enumerate(prompts):
                prompt_mask[number * examples:(number + 1) * examples, start:start + len(prompt)] = True
            inputs = splice(inputs, x.repeat_interleave(examples, dim=0), start, prompt_mask)
        logits = member.model(inputs_embeds=inputs, attention_mask=attention).logits[:, :-1].float()
        nll = F.cross_entropy(logits.transpose(1, 2), targets[:, 1:], ignore_index=IGNORE,
                              reduction="none").reshape(len(prompts), -1)
        counts = (targets[:, 1:] != IGNORE).reshape(len(prompts), -1).sum(dim=1).clamp(min=1)
        return nll.sum(dim=1) / counts

    @torch.no_grad()
    def losses(self, ids: torch.Tensor) -> torch.Tensor:
        rows = ids.tolist()
        total = self._member_loss(0, rows)
        for index, member in enumerate(self.members[1:], 1):
            total = total + self._member_loss(index, member.bridge.ids_b(rows)).to(total.device)
        return total

    def gradients(self, ids: torch.Tensor) -> torch.Tensor:
        primary, rows = self.members[0], ids.tolist()
        one_hot = F.one_hot(ids.to(primary.device), primary.embeddings.shape[0])
        one_hot = one_hot.to(primary.embeddings.dtype).requires_grad_(True)
        x_a = one_hot @ primary.embeddings.detach()
        total = self._member_loss(0, rows, x_a).sum()
        for index, member in enumerate(self.members[1:], 1):
            x_b, ids_b = member.bridge.embed_one_hot(one_hot, primary.embeddings.detach(), rows)
            total = total + self._member_loss(index, ids_b, x_b.to(member.device)).sum().to(total.device)
        (gradient,) = torch.autograd.grad(total, one_hot)
        return gradient

    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        return self.primary.logits(ids)


def discover(ctx: BuildContext, members: Sequence[Member], method: str) -> str:
    """The prompt for this cell's training data: read from the fit cache (keyed like every
    fit: models, options, data, seed, device) or searched and stored. Its report (prompt
    text and ids, budget, objective, seconds) is merged into `ctx.report`."""
    options = ctx.options
    examples, source = training_examples(ctx, options)
    chosen = random.Random(ctx.seed).sample(examples, min(options.train_examples, len(examples)))
    device = members[0].device
    key = fit_fingerprint(ctx, method, options, data_digest(chosen), device.type)
    fits, label = fit_cache(ctx), f"{method}-"
    stored = fits.load(key, read_record, label)
    if stored is not None:
        return _reported(ctx, stored | {"fit_cached": True})
    objective = AnswerObjective(members, chosen)
    placeholder = word_start_token(members[0].tokenizer, "!" if options.algorithm == "autodan" else ".")
    result = search(objective, options.search_config(), ctx.seed, placeholder)
    tokenizer = members[0].tokenizer
    report = {"prompt": tokenizer.decode(result.ids), "prompt_ids": result.ids,
              "train_steps": len(result.step_losses), "loss_evaluations": result.evaluations,
              "train_seconds": round(result.seconds, 3), "first_loss": result.step_losses[0],
              "final_loss": result.loss,
              "step_losses": result.step_losses,
              "no_prompt_loss": float(objective.losses(torch.zeros(1, 0, dtype=torch.long))[0]),
              "train_examples": len(chosen), "train_data": source, "fit_fingerprint": key}
    fits.publish(key, lambda folder: write_record(folder, report), label)
    return _reported(ctx, report | {"fit_cached": False})


def _reported(ctx: BuildContext, report: dict[str, Any]) -> str:
    ctx.report.merge(MethodReport.from_dict(report))
    return str(report["prompt"])
