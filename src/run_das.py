"""`python3 src/run_das.py ...`, the thesis's path to the DAS sweep (its README's command lines): runs
the top-level run_das.py as `__main__` with the same arguments, so both paths are one script, with
the same flags, defaults, results path and output.

    python3 src/run_das.py --model_path results/gpt2/model --causal_model_type arithmetic \
        --n_training 256000 --n_testing 256 --batch_size 1280 --epochs 4
"""

import runpy
from pathlib import Path

if __name__ == "__main__":
    runpy.run_path(str(Path(__file__).resolve().parents[1] / "run_das.py"), run_name="__main__")
