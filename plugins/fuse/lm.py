"""The lm-eval `LM` that answers captioning requests with a FUSE search per image."""

from __future__ import annotations

import dataclasses
from typing import Any

from lm_eval.api.model import LM
from tqdm.auto import tqdm

from harness.api import BuildContext, HarnessError
from harness.fuse import (Bridge, CaptionObjective, CaptionWeights, ClipText, PrimaryLM,
                          SearchConfig, search, word_start_token)


class FuseCaptioner(LM):
    """generate_until on (prompt, generation settings, {"visual": [image]}) requests: the
    caption FUSE's search finds for the image (the task's prompt text is not used; the
    method's own prefix conditions both models). The caption has at most `max_gen_toks`
    primary-model tokens: AutoDAN's steps (GCG's length) are capped by it."""

    MULTIMODAL = True

    def __init__(self, primary: PrimaryLM, clip: ClipText, image_processor: Any, bridge: Bridge,
                 config: SearchConfig, weights: CaptionWeights, seed: int) -> None:
        super().__init__()
        self.primary, self.clip, self.image_processor = primary, clip, image_processor
        self.bridge, self.config, self.weights, self.seed = bridge, config, weights, seed
        self.placeholder = word_start_token(primary.tokenizer, "!" if config.algorithm == "autodan" else ".")
        self.details: dict[int, dict[str, Any]] = {}

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        captions = []
        for request in tqdm(requests, desc="FUSE captions", disable=disable_tqdm):
            _, settings, media = request.args
            images = media.get("visual") if isinstance(media, dict) else None
            if not images:
                raise HarnessError("fuse captions images: the task sent a request without one")
            caption, self.details[request.doc_id] = self.caption(images[0], settings)
            self.cache_hook.add_partial("generate_until", request.args, caption)
            captions.append(caption)
        return captions

    def caption(self, image: Any, settings: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """(caption, what the search did) for one image."""
        budget = int(settings.get("max_gen_toks", self.config.steps))
        config = dataclasses.replace(self.config, steps=min(self.config.steps, budget),
                                     length=min(self.config.length, budget))
        features = self.clip.image_features([image], self.image_processor)
        objective = CaptionObjective(self.primary, self.clip, self.bridge, features, self.weights)
        result = search(objective, config, self.seed, self.placeholder)
        text = self.primary.tokenizer.decode(result.ids).strip()
        for stop in settings.get("until") or []:
            text = text.split(stop)[0] if stop else text
        return text, {"objective": result.loss, "evaluations": result.evaluations,
                      "search_seconds": round(result.seconds, 3), "step_objectives": result.step_losses}

    def begin_cell(self, ctx: BuildContext) -> None:
        self.details = {}  # keyed by document id: a new task starts afresh

    def sample_annotations(self, sample: dict[str, Any]) -> dict[str, Any]:
        return {"fuse": self.details.get(sample["doc_id"], {})}

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[Any]:
        raise HarnessError("fuse generates captions; it does not score log-likelihoods")

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[Any]:
        raise HarnessError("fuse generates captions; it does not score log-likelihoods")

