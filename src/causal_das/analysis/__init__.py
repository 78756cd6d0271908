"""Disentangling: IIA graphs over the 1000 triples, cliques, division of the inputs among causal
models, and classification of new inputs (`disentangle_causal_models.py`)."""
