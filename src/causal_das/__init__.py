"""causal_das: Distributed Alignment Search (DAS) for finding and disentangling causal models.

The package in layers, each importing only from those below it (tests/test_architecture.py keeps
it so; docs/architecture.md draws it):

    experiments/   one module per experiment family: what each script at the repository root runs
    analysis/      the disentangling algorithms        plots/   every figure, from result JSON only
    models/        the networks: builders, sites, trainers, loaders
    tasks/         inputs and causal-model families (causal_model.py, metrics.py beside them)
    das/           sites, interventions, the shared training loop, the fast and pyvene engines
    runtime/       flags, atomic result files, resumable cells, executors, devices, provenance
"""

__version__ = "0.1.0"
