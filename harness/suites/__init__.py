"""Suite files shipped with the harness (harness run --suite NAME)."""
