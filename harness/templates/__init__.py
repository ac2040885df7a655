"""Package data: the HTML leaderboard page (`leaderboard.html`), filled by
harness.reporting.html_page."""
