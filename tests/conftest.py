import os

# Keep the test suite quiet and single-process-friendly on small machines.
os.environ.setdefault("TQDM_DISABLE", "1")
