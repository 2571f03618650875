"""Single-dataset recipes (the paper's standard setting) on the shared training engine."""
