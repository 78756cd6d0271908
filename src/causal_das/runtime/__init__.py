"""Run plumbing: flags, atomic result files, resumable cells, executors, devices, progress, provenance."""
