"""Tasks: input samplers and causal-model families. They know nothing of networks."""
