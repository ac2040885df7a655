"""Package data: the HTML leaderboard page (`leaderboard.html`), filled by
harness.report.html.html_page."""
