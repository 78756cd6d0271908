"""Every figure, drawn from result JSON only (never from a model); one module per experiment family."""
