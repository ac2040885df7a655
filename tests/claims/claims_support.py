"""What the claims tests share: the committed claims table and its verdicts."""

from __future__ import annotations

from pathlib import Path

from harness.report.claims import CLAIMS

CLAIMS_RESULTS = Path(__file__).resolve().parents[2] / "results" / "claims"


def committed_verdicts() -> dict[str, bool]:
    """Each claim's verdict in the committed table (results/claims/claims.md)."""
    table = (CLAIMS_RESULTS / "claims.md").read_text().splitlines()
    return {claim.statement: next(line for line in table if f"| {claim.statement} |" in line)
            .endswith("| yes |") for claim in CLAIMS}
