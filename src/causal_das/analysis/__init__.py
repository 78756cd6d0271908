"""The disentangling algorithms, on arrays, for any task: IIA graphs over a task's distinct inputs
(`graphs`), cliques, the division of the inputs among causal models, classification of new inputs,
and how much each moves (`stability`, `seed_variation`). What they need to know of the task comes in
as an `inputs.InputTable` (the X+Y+Z one: `studies.arithmetic_analysis.INPUTS`). The steps that run
them on result files are `experiments.iia_graphs` and `experiments.disentangling`."""
