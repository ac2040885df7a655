"""Models: references, loading through transformers, and the meter that counts what each
loaded model computes."""
