"""What the claims tests share: the committed claims table and its verdicts."""

from __future__ import annotations

from pathlib import Path

from harness.report.claims import CLAIMS, evaluate

from support import run_cli

CLAIMS_RESULTS = Path(__file__).resolve().parents[2] / "results" / "claims"


def committed_verdicts() -> dict[str, bool]:
    """Each claim's verdict in the committed table (results/claims/claims.md)."""
    table = (CLAIMS_RESULTS / "claims.md").read_text().splitlines()
    return {claim.statement: next(line for line in table if f"| {claim.statement} |" in line)
            .endswith("| yes |") for claim in CLAIMS}


def assert_suite_reproduces_the_committed_verdicts(suite: str, results: str,
                                                   tmp_path: Path) -> None:
    """Run the claims suite `suite` into `tmp_path/results` and check that every claim
    of that folder pools three seeds and reaches the committed verdict."""
    result = run_cli("run", "--suite", suite, "--results", str(tmp_path / results), timeout=3600)
    assert result.returncode == 0, result.stderr
    committed = committed_verdicts()
    for claim in (c for c in CLAIMS if c.results == results):
        comparison, seeds = evaluate(claim, tmp_path)
        assert seeds == 3
        assert claim.holds(comparison) == committed[claim.statement], (claim.statement,
                                                                       comparison)
