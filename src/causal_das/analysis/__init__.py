"""The disentangling algorithms, on arrays: IIA graphs over the 1000 triples (`graphs`), cliques,
the division of the inputs among causal models, and classification of new inputs. The steps that
run them on result files are `experiments.iia_graphs` and `experiments.disentangling`."""
