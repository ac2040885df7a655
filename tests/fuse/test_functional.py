"""Functional check on the tiny zoo: do FUSE's gradients find better captions than the same
search without them, at an equal budget?

Fixed before it was first run: tiny-gpt2 + tiny-clip, the shipped dictionary, the eight
embedded COCO-format images, the released defaults (AutoDAN, beam 4, weights 1 and 22,
prefix "An image of") except 6 steps and 32 candidates per beam (the tiny vocabulary has
768 tokens; 256 would be a third of it). FUSE guidance must reach a lower objective than
LM-logits-only guidance on most (at least 5) of the 8 images.

Measured (CPU, torch 2.13): FUSE lower on 1 of 8 images; objectives fuse / none per image
24.29/24.02, 24.26/23.99, 24.07/23.88, 24.23/23.97, 24.14/23.81, 24.14/24.19, 24.07/23.91,
24.24/23.93. Why: the zoo's embedding tables are random and unrelated, so FUSE's premise (the
two embedding spaces are linearly related through words) fails. The adapter leaves 41-57%
of the dictionary's own B-embedding energy unexplained, and over all 700-odd candidate next
tokens the FUSE gradient correlates with the CLIP term they reach at Spearman 0.05
(0.14-0.23 when tiny-clip's table is rebuilt as a linear image of tiny-gpt2's), while the
logits-only baseline ranks the LM term exactly. The test stays as it was registered and is
expected to fail until the zoo has a pair of related embedding spaces.
"""

from __future__ import annotations

import pytest
from PIL import Image

from harness import zoo
from harness.fuse.adapter import AdapterConfig
from harness.fuse.bridge import Side, connect
from harness.fuse.caption import CaptionObjective, ClipText, PrimaryLM
from harness.fuse.search import SearchConfig, search
from harness.fuse.words import word_start_token
from harness.models import ModelRef, load_causal_lm, load_clip
from harness.tasks.coco_captioning import EMBEDDED_ANNOTATIONS, FIXTURES, read_coco_captions

PREFIX = "An image of"


@pytest.fixture(scope="module")
def captioning() -> tuple:
    lm_ref, clip_ref = ModelRef("harness-zoo/tiny-gpt2"), ModelRef("harness-zoo/tiny-clip")
    lm, tokenizer = load_causal_lm(lm_ref)
    clip, clip_tokenizer, images = load_clip(clip_ref)
    primary, text = PrimaryLM.with_text_prefix(lm, tokenizer, PREFIX), ClipText(clip, clip_tokenizer, PREFIX)
    bridge, _ = connect(Side(lm_ref.identity(), tokenizer, primary.embeddings),
                        Side(clip_ref.identity(), clip_tokenizer, text.embeddings),
                        AdapterConfig(), "", "correct", 0, zoo.cache_root())
    return primary, text, images, bridge


@pytest.mark.slow
@pytest.mark.xfail(strict=False, raises=AssertionError, reason=(
    "random zoo embeddings are unrelated, so FUSE's gradient carries little signal: the "
    "outcome flips with run-to-run numerical differences (FUSE lower on 1 of 8 images in one "
    "environment, 7 of 8 in a fresh tox environment; see the docstring)"))
def test_fuse_gradients_beat_the_no_gradient_search(captioning: tuple) -> None:
    primary, text, processor, bridge = captioning
    placeholder = word_start_token(primary.tokenizer, "!")
    rows = []
    for image in read_coco_captions(EMBEDDED_ANNOTATIONS):
        with Image.open(FIXTURES / "images" / image["file_name"]) as opened:
            features = text.image_features([opened.convert("RGB")], processor)
        objective = CaptionObjective(primary, text, bridge, features)
        results = {guidance: search(objective, SearchConfig(guidance=guidance, steps=6, candidates=32),
                                    seed=0, placeholder_id=placeholder)
                   for guidance in ("fuse", "none")}
        assert results["fuse"].evaluations == pytest.approx(results["none"].evaluations, rel=0.1)
        rows.append((image["image_id"], results["fuse"].loss, results["none"].loss))
    for image_id, fuse, none in rows:
        print(f"image {image_id}: objective fuse {fuse:.4f}  none {none:.4f}  diff {none - fuse:+.4f}")
    wins = sum(fuse < none for _, fuse, none in rows)
    print(f"FUSE lower on {wins} of {len(rows)} images")
    assert wins >= 5
