"""MethodReport and ScoreDetails: typed fields for what the host reads, facts for the rest,
stored as the flat objects records have always held."""

import json
from pathlib import Path

import pytest

from harness.contract import MethodReport, ScoreDetails
from harness.results.records import CellRecord

REPO = Path(__file__).resolve().parents[3]


def test_typed_fields_and_facts_are_stored_flat_and_read_back() -> None:
    report = MethodReport(trainable_params=64, total_params=1000, fit_cached=False)
    report.facts["connections"] = [{"anchor_layer": 1, "augmenting_layer": 1}]
    stored = report.to_dict()
    assert stored == {"trainable_params": 64, "total_params": 1000, "fit_cached": False,
                      "connections": [{"anchor_layer": 1, "augmenting_layer": 1}]}
    assert MethodReport.from_dict(stored) == report
    assert MethodReport().to_dict() == {} and MethodReport.from_dict(None) == MethodReport()
    details = ScoreDetails(headline_unavailable="no ratings", caveats=["weak isolation"],
                           facts={"judge": {"model": "x"}})
    assert ScoreDetails.from_dict(details.to_dict()) == details
    assert ScoreDetails(facts={"images": 3}).to_dict() == {"images": 3}  # no empty caveats


def test_a_fact_may_not_shadow_a_typed_field() -> None:
    report = MethodReport(total_params=5, facts={"total_params": 7})
    with pytest.raises(ValueError, match="total_params"):
        report.to_dict()


def test_merge_takes_what_the_other_report_sets() -> None:
    report = MethodReport(trainable_params=0, total_params=10, facts={"layout": "causal"})
    report.merge(MethodReport(total_params=12, train_tokens=300, facts={"final_loss": 0.5}))
    assert report == MethodReport(trainable_params=0, total_params=12, train_tokens=300,
                                  facts={"layout": "causal", "final_loss": 0.5})


def test_every_committed_record_reads_and_writes_back_unchanged() -> None:
    paths = sorted((REPO / "results").rglob("result.json"))
    if not paths:
        pytest.skip("no committed results in this checkout")
    for path in paths:
        stored = json.loads(path.read_text(encoding="utf-8"))
        again = CellRecord.from_dict(stored, str(path)).to_dict()
        for part in ("method_report", "score_details"):
            assert again[part] == (stored.get(part) or {}), (path, part)
