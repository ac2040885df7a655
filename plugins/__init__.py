"""Built-in method plugins, installed as harness.plugins.<name>."""
