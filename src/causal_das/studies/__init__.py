"""What the experiments of one study share. Each module of `experiments/` runs one script's work and
builds on these and on the core; no experiment module imports another."""
