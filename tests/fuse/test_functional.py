"""FUSE's claim in the zoo's scene world, reduced (the full experiment: `python -m
harness.fuse.claims`, results in results/claims/fuse/, and the slow test below).

Fixed before it was run: the seed-0 scene models (scene-lm, byte-level BPE, 16 wide;
scene-classifier, CLIP's tokenizer family; scene-classifier-bytelevel, the ceiling reading
scene-lm's tokens), the first 12 targets of `attribute_targets`, `ClaimConfig`'s defaults
(AutoDAN, 5 steps, 4 candidates per beam, beam 2, weights 1 and 4, the scene-world
dictionary), every arm at the same number of exact evaluations.

Asserted: the world can show a gradient's worth (the ceiling, the classifier's own exact
gradient, reaches the target far more often than the same search without gradients), FUSE's
gradient beats random guidance, and on seed 0 it beats LM-logits-only guidance by half the
ceiling's gain. The last is seed 0's result, not the claim's: over the full experiment FUSE
has 26% of the ceiling's gain, nearly all of it from seed 0 (see the README's claims table
for the shortfall and its cause, a weak linear relation between two independently trained
tiny embedding tables: held-out R^2 below 0).

Cost (measured on this project's busy 2-core machine): 115 CPU seconds with an empty zoo
cache, about half of it training the three scene models (the ceiling's model trains in a
second process, on the other core), the rest 60 searches and imports; 62 CPU seconds with
the models cached.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest

from harness import zoo
from harness.fuse import claims
from harness.report.significance import mcnemar_p
from harness.settings import cache_root

TARGETS = 12
RESULTS = Path(__file__).parents[2] / "results" / "claims" / "fuse"


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    config = replace(claims.ClaimConfig(), seeds=(0,), targets=TARGETS, images=0)
    with ProcessPoolExecutor(1, multiprocessing.get_context("spawn")) as pool:  # on the second core
        ceiling = pool.submit(zoo.zoo_path, "harness-zoo/scene-classifier-bytelevel")
        for model in ("scene-lm", "scene-classifier"):
            zoo.zoo_path(f"harness-zoo/{model}")
        ceiling.result()
    found, report = claims.attribute_rows(claims.load_world(0, cache_root()), config)
    assert report["scene-classifier-bytelevel"] == {"shared_vocabulary": True}
    assert report["scene-classifier"]["words_per_subtoken_count"][0] > 30
    for row in found:
        print(row["arm"], row["target"], row["success"], f"{row['objective']:.3f}", row["text"])
    return found


def success(rows: list[dict], arm: str) -> list[int]:
    return [r["success"] for r in rows if r["arm"] == arm]


def test_every_arm_spends_the_same_budget(rows: list[dict]) -> None:
    budgets = {arm: [r["evaluations"] for r in rows if r["arm"] == arm] for arm in claims.ARMS}
    assert all(len(b) == TARGETS for b in budgets.values())
    for arm in claims.ARMS:  # unique candidates per step: equal up to duplicates removed
        assert all(abs(a - b) <= 0.1 * b for a, b in zip(budgets[arm], budgets["none"]))


def objectives(rows: list[dict], arm: str) -> list[float]:
    return [r["objective"] for r in rows if r["arm"] == arm]


def test_the_exact_gradient_ceiling_beats_the_search_without_gradients(rows: list[dict]) -> None:
    """Measured: 8 of 12 targets reached against 2."""
    exact, blind = success(rows, "exact"), success(rows, "exact-none")
    assert sum(exact) - sum(blind) >= 3


def test_fuse_gradients_beat_random_guidance(rows: list[dict]) -> None:
    """Measured: a lower objective on 12 of 12 targets; random guidance reaches none."""
    lower = sum(f < r for f, r in zip(objectives(rows, "fuse"), objectives(rows, "random")))
    assert lower >= 7 and sum(success(rows, "random")) == 0


# A plain test since CLIP's tokenizer family trains the same in every process (harness.zoo.
# builders); before, each fresh cache built another scene-classifier (its vocabulary numbered
# anew), and this was a non-strict xfail that failed in one CI run and passed in the next.
# Far from its edge now: a difference of 8 against the 3 asserted, McNemar p 0.008 (8 wins, no
# loss) against 0.05, the same counts in three runs: fresh caches under ATEN_CPU_CAPABILITY
# avx512 and default with 4 OpenMP threads (their trained weights differ) and cached models
# searched under avx2. Seed 0 only: over the full experiment (results/claims/fuse/attribute/)
# seeds 1 and 2 gain little or nothing (9 vs 9, 12 vs 10 of 50), so the claim's aim stays unmet.
def test_fuse_beats_no_gradients_by_half_the_ceiling_gain(rows: list[dict]) -> None:
    """Measured: FUSE reaches 10 targets, LM logits alone 2, the ceiling gains 6."""
    fuse, none = success(rows, "fuse"), success(rows, "none")
    ceiling = sum(success(rows, "exact")) - sum(success(rows, "exact-none"))
    assert sum(fuse) - sum(none) >= ceiling / 2
    assert mcnemar_p(fuse, none) < 0.05


@pytest.mark.skipif(not os.environ.get("HARNESS_SLOW_TESTS"), reason=(
    "the full experiment (3 training seeds x 50 targets, 50 rendered scenes captioned per "
    "seed) trains every scene model and takes about an hour on 2 cores; set HARNESS_SLOW_TESTS=1"))
@pytest.mark.parametrize("experiment", ["attribute", "captioning"])
def test_full_experiment_reproduces_the_committed_results(tmp_path: Path, experiment: str) -> None:
    committed = json.loads((RESULTS / experiment / "summary.json").read_text())
    config = committed["config"]
    assert claims.main(["--seeds", ",".join(map(str, config["seeds"])), "--targets", str(config["targets"]),
                        "--images", str(config["images"]), "--out", str(tmp_path)]) == 0
    fresh = json.loads((tmp_path / "summary.json").read_text())
    for metric, arms in committed[experiment]["means"].items():  # approx compares flat mappings
        assert fresh[experiment]["means"][metric] == pytest.approx(arms, abs=0.02), metric
    assert fresh[experiment]["aim_met"] == committed[experiment]["aim_met"]
