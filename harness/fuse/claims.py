"""FUSE's claim measured in the zoo's scene world (harness.zoo.scenes): gradients carried
across tokenizers make a discrete search better than the same search without them.

Two experiments, each over training seeds (every scene model trained once per seed):

- classifier-guided: the scene LM writes after "an image of", the attribute classifier
  (CLIP's tokenizer family) steers it toward a target (colour, shape); a target is reached
  when the text's first "colour shape" is the target;
- captioning: the scene LM captions a rendered scene, the scene CLIP judges it; scored by
  CLIP similarity (the judge's cosine), CIDEr against the grammar's captions of the scene,
  and whether the first "colour shape" named is in the scene.

Arms, at equal numbers of exact evaluations: `fuse` (the FUSE gradient + LM logits),
`none` (LM logits only), `random` (uniform over the allowed tokens), and the ceiling
`exact`: the same search with the secondary model's twin that reads the LM's own tokens, so
its gradient reaches the LM's tokens by plain backprop; `exact-none` is that objective
searched without gradients, the ceiling's own baseline. The ceiling's gain is
exact - exact-none; FUSE's gain is fuse - none.

    python -m harness.fuse.claims --images 0 --out results/claims/fuse/attribute
    python -m harness.fuse.claims --targets 0 --out results/claims/fuse/captioning
    python -m harness.fuse.claims --seeds 0 --targets 12 --images 0     # a reduced one, printed
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

ARMS = ("fuse", "none", "random", "exact", "exact-none")
FUSE_ARMS = ("fuse", "none", "random")  # the secondary model with another tokenizer


@dataclass(frozen=True)
class ClaimConfig:
    seeds: tuple[int, ...] = (0, 1, 2)
    targets: int = 50  # (colour, shape) targets per seed, classifier-guided
    images: int = 50  # rendered scenes per seed, captioning
    attribute_steps: int = 5
    caption_steps: int = 10
    candidates: int = 4  # per beam: a small share of the LM's vocabulary, as 256 of GPT-2's 50K
    beam_width: int = 2
    lm_weight: float = 1.0
    classifier_weight: float = 4.0
    clip_weight: float = 22.0  # the released code's
    dictionary: str = "scene-world"
    # AutoDAN's placeholder next token, where gradients are taken: the released code's "!" is
    # no word start in the scene LM's vocabulary (it would glue to the word before it)
    placeholder: str = "a"
    resamples: int = 2000

    def search(self, steps: int, guidance: str) -> Any:
        from harness.fuse._search import SearchConfig

        return SearchConfig(guidance=guidance, steps=steps, candidates=self.candidates,  # type: ignore[arg-type]
                            beam_width=self.beam_width)


@dataclass
class World:
    """One training seed's scene models, loaded once."""

    seed: int
    primary: Any
    lm_ref: Any
    cache_root: Path
    adapters: dict[str, Any] = field(default_factory=dict)


def model_name(base: str, seed: int) -> str:
    return f"harness-zoo/{base}" + (f"-seed{seed}" if seed else "")


def load_world(seed: int, cache_root: Path) -> World:
    from harness.contract import ModelRef
    from harness.fuse._caption import PrimaryLM
    from harness.models.loading import load_causal_lm
    from harness.training import freeze
    from harness.zoo import scenes

    ref = ModelRef(model_name("scene-lm", seed))
    lm, tokenizer = load_causal_lm(ref)
    freeze(lm)
    return World(seed, PrimaryLM.with_text_prefix(lm, tokenizer, scenes.PREFIX), ref, cache_root)


def connect_secondary(world: World, ref: Any, tokenizer: Any, embeddings: Any,
                      config: ClaimConfig) -> tuple[Any, dict[str, Any]]:
    from harness.fuse._adapter import AdapterConfig
    from harness.fuse._bridge import Side, connect
    from harness.models.loading import model_identity

    return connect(Side(model_identity(world.lm_ref), world.primary.tokenizer, world.primary.embeddings),
                   Side(model_identity(ref), tokenizer, embeddings), AdapterConfig(), config.dictionary,
                   "correct", world.seed, world.cache_root)


def attribute_rows(world: World, config: ClaimConfig) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One row per (target, arm) for this seed's world, and the adapter's report."""
    from transformers import AutoModelForSequenceClassification

    from harness.contract import ModelRef
    from harness.fuse._attribute import AttributeObjective, ClassifierText
    from harness.fuse._search import search
    from harness.fuse._words import word_start_token
    from harness.models.loading import load_weights, load_tokenizer
    from harness.training import freeze
    from harness.zoo import scenes

    placeholder = word_start_token(world.primary.tokenizer, config.placeholder)
    rows, report = [], {}
    for base, arms in (("scene-classifier", FUSE_ARMS), ("scene-classifier-bytelevel", ("exact", "exact-none"))):
        ref = ModelRef(model_name(base, world.seed))
        model = load_weights(AutoModelForSequenceClassification, ref, "classifier")
        freeze(model)
        tokenizer = load_tokenizer(ref)
        text = ClassifierText(model, tokenizer, scenes.PREFIX)
        bridge, adapter = connect_secondary(world, ref, tokenizer, text.embeddings, config)
        report[base] = adapter
        for target in attribute_targets(config.targets, world.seed):
            objective = AttributeObjective(world.primary, text, bridge, scenes.head_classes(target),
                                           scenes.CLASSIFIER_HEADS, config.lm_weight,
                                           config.classifier_weight)
            for arm in arms:
                guidance = "none" if arm.endswith("none") else "fuse" if arm == "exact" else arm
                result = search(objective, config.search(config.attribute_steps, guidance),
                                world.seed, placeholder)
                caption = world.primary.tokenizer.decode(result.ids)
                rows.append({"seed": world.seed, "target": target, "arm": arm, "text": caption.strip(),
                             "objective": result.loss, "evaluations": result.evaluations,
                             "success": int(scenes.first_thing(caption) == scenes.label_attributes(target))})
    return rows, report


def attribute_targets(count: int, seed: int) -> list[int]:
    """`count` distinct (colour, shape) classes, in the order the world's scenes first name
    them (targets follow the world's habits: a pair it never draws would fight the LM)."""
    from harness.zoo import scenes

    targets: list[int] = []
    for scene in scenes.evaluation_scenes(10 * count + 200, seed):
        if scene.label not in targets:
            targets.append(scene.label)
    return targets[:count]


def caption_rows(world: World, config: ClaimConfig) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One row per (rendered scene, arm), each caption scored by this seed's scene CLIP."""
    import torch

    from harness.contract import ModelRef
    from harness.fuse._caption import CaptionObjective, CaptionWeights, ClipText
    from harness.fuse._search import search
    from harness.fuse._words import word_start_token
    from harness.models.loading import load_clip
    from harness.training import freeze
    from harness.zoo import scenes

    placeholder = word_start_token(world.primary.tokenizer, config.placeholder)
    weights = CaptionWeights(config.lm_weight, config.clip_weight)
    chosen = list(scenes.evaluation_scenes(config.images, world.seed))
    judge: ClipText | None = None
    rows, report = [], {}
    for base, arms in (("scene-clip", FUSE_ARMS), ("scene-clip-bytelevel", ("exact", "exact-none"))):
        ref = ModelRef(model_name(base, world.seed))
        clip, tokenizer, processor = load_clip(ref)
        freeze(clip)
        text = ClipText(clip, tokenizer, scenes.PREFIX)
        judge = judge or text
        bridge, adapter = connect_secondary(world, ref, tokenizer, text.embeddings, config)
        report[base] = adapter
        for number, scene in enumerate(chosen):
            image = scenes.render(scene, seed=10_000 * (world.seed + 1) + number)
            objective = CaptionObjective(world.primary, text, bridge, text.image_features([image], processor),
                                         weights)
            judged = judge.image_features([image], processor)
            for arm in arms:
                guidance = "none" if arm.endswith("none") else "fuse" if arm == "exact" else arm
                result = search(objective, config.search(config.caption_steps, guidance), world.seed,
                                placeholder)
                caption = world.primary.tokenizer.decode(result.ids).strip()
                with torch.no_grad():
                    ids_b = [judge.tokenizer(" " + caption, add_special_tokens=False)["input_ids"]]
                    similarity = float(judge.features(ids_b) @ judged.reshape(-1))
                named = scenes.first_thing(caption)
                rows.append({"seed": world.seed, "image": number, "arm": arm, "caption": caption,
                             "references": scene.references(), "objective": result.loss,
                             "evaluations": result.evaluations, "clip_similarity": similarity,
                             "object_named": int(named in {(t.colour, t.shape) for t in scene.things})})
    add_cider(rows)
    return rows, report


def caption_words(text: str) -> str:
    return " ".join(re.findall(r"[a-z]+", text.lower()))


def add_cider(rows: list[dict[str, Any]]) -> None:
    """Each row's CIDEr-D against its scene's references, document frequencies taken over
    the rows' scenes per arm (pycocoevalcap's scorer, as the COCO evaluation)."""
    from pycocoevalcap.cider.cider import Cider

    for arm in {r["arm"] for r in rows}:
        chosen = [r for r in rows if r["arm"] == arm]
        references = {i: [caption_words(c) for c in r["references"]] for i, r in enumerate(chosen)}
        candidates = {i: [caption_words(r["caption"]) or "nothing"] for i, r in enumerate(chosen)}
        _, scores = Cider().compute_score(references, candidates)
        for row, score in zip(chosen, scores):
            row["cider"] = float(score)


def paired(rows: Sequence[dict[str, Any]], arm_a: str, arm_b: str, key: str, unit: str,
           binary: bool, resamples: int) -> dict[str, Any]:
    """A against B on `key`, paired by (seed, unit): mean difference, its bootstrap 95%
    interval and p-value, and for 0/1 keys the exact McNemar p-value (the reported one)."""
    from harness.report.significance import (bootstrap_differences, bootstrap_summary, mcnemar_p,
                                             pair_seed)

    by_arm = {arm: {(r["seed"], r[unit]): r[key] for r in rows if r["arm"] == arm} for arm in (arm_a, arm_b)}
    keys = sorted(set(by_arm[arm_a]) & set(by_arm[arm_b]))
    a, b = [by_arm[arm_a][k] for k in keys], [by_arm[arm_b][k] for k in keys]
    difference = (sum(a) - sum(b)) / len(keys)
    low, high, p_boot = bootstrap_summary(difference, bootstrap_differences(
        a, b, None, resamples, pair_seed(0, arm_a, arm_b, key)))
    result = {"a": arm_a, "b": arm_b, "metric": key, "pairs": len(keys), "difference": difference,
              "ci95": [low, high], "p_bootstrap": p_boot,
              "wins": sum(x > y for x, y in zip(a, b)), "losses": sum(x < y for x, y in zip(a, b))}
    if binary:
        result["p_mcnemar"] = mcnemar_p(a, b)
    result["p"] = result["p_mcnemar"] if binary else p_boot
    return result


def mean_by_arm(rows: Sequence[dict[str, Any]], key: str) -> dict[str, float]:
    arms = [arm for arm in ARMS if any(r["arm"] == arm for r in rows)]
    return {arm: sum(r[key] for r in rows if r["arm"] == arm) / sum(1 for r in rows if r["arm"] == arm)
            for arm in arms}


def summarise(rows: Sequence[dict[str, Any]], unit: str, headline: str, binary: bool,
              metrics: Sequence[str], resamples: int) -> dict[str, Any]:
    """Means per arm, FUSE against each baseline (headline metric and final objective, where a
    lower objective is better), and FUSE's share of the ceiling's gain."""
    means = {key: mean_by_arm(rows, key) for key in (*metrics, "objective", "evaluations")}
    tests = [paired(rows, "fuse", other, headline, unit, binary, resamples) for other in ("none", "random")]
    tests += [paired(rows, other, "fuse", "objective", unit, False, resamples) for other in ("none", "random")]
    tests.append(paired(rows, "exact", "exact-none", headline, unit, binary, resamples))
    tests += [paired(rows, "fuse", "none", key, unit, key == "object_named", resamples)
              for key in metrics if key != headline]
    head = means[headline]
    ceiling_gain = head["exact"] - head["exact-none"]
    fuse_gain = head["fuse"] - head["none"]
    share = fuse_gain / ceiling_gain if ceiling_gain > 0 else math.nan
    beats = all(t["difference"] > 0 and t["p"] < 0.05 for t in tests[:2])
    return {"headline": headline, "means": means, "tests": tests, "fuse_gain": fuse_gain,
            "ceiling_gain": ceiling_gain, "share_of_ceiling_gain": share,
            "seeds": sorted({r["seed"] for r in rows}),
            "units_per_seed": len({(r["seed"], r[unit]) for r in rows}) // len({r["seed"] for r in rows}),
            "aim_met": bool(beats and share >= 0.5)}


def run(config: ClaimConfig, cache_root: Path, log: Any = sys.stderr) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    attribute, caption, adapters = [], [], {}
    started = time.perf_counter()
    for seed in config.seeds:
        world = load_world(seed, cache_root)
        if config.targets:
            rows, report = attribute_rows(world, config)
            attribute += rows
            adapters[f"seed{seed}"] = report
        if config.images:
            rows, report = caption_rows(world, config)
            caption += rows
            adapters.setdefault(f"seed{seed}", {}).update(report)
        print(f"seed {seed} done after {time.perf_counter() - started:.0f} s", file=log, flush=True)
    summary: dict[str, Any] = {"config": asdict(config), "adapters": adapters,
                               "seconds": round(time.perf_counter() - started, 1)}
    if attribute:
        summary["attribute"] = summarise(attribute, "target", "success", True, ("success",), config.resamples)
    if caption:
        summary["captioning"] = summarise(caption, "image", "clip_similarity", False,
                                          ("clip_similarity", "cider", "object_named"), config.resamples)
    return {"summary": summary, "attribute_rows": attribute, "caption_rows": caption}


def main(argv: Sequence[str] | None = None) -> int:
    from harness.settings import cache_root

    parser = argparse.ArgumentParser(prog="python -m harness.fuse.claims", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2", help="training seeds of the scene models")
    parser.add_argument("--targets", type=int, default=ClaimConfig.targets)
    parser.add_argument("--images", type=int, default=ClaimConfig.images)
    parser.add_argument("--out", type=Path, help="folder for summary.json and the rows (default: print)")
    args = parser.parse_args(argv)
    try:
        seeds = tuple(int(s) for s in args.seeds.split(","))
    except ValueError:
        parser.error(f"--seeds: a comma-separated list of integers, got {args.seeds!r}")
    config = replace(ClaimConfig(), seeds=seeds, targets=args.targets, images=args.images)
    results = run(config, cache_root())
    text = json.dumps(results["summary"], indent=2, sort_keys=True)
    if args.out is None:
        print(text)
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(text + "\n")
    for name in ("attribute_rows", "caption_rows"):
        if results[name]:
            (args.out / f"{name}.jsonl").write_text("".join(json.dumps(r, sort_keys=True) + "\n"
                                                            for r in results[name]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
