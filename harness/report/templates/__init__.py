"""Package data: the HTML leaderboard page (`leaderboard.html`), filled by
harness.report.board.html_page."""
