"""Built-in method plugins, installed as harness.methods.<name>."""
