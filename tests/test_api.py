"""The example of docs/api.md runs as written, on a small trained GPT-2."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_api_example_runs(tmp_path, monkeypatch):
    model = tmp_path / "model"
    subprocess.run([sys.executable, str(ROOT / "train_gpt2.py"), "--output_dir", str(model), "--epochs", "3", "--width", "16",
                    "--n_layers", "3", "--n_heads", "2"], check=True, capture_output=True, cwd=ROOT, env={"PATH": "/usr/bin:/bin", "TQDM_DISABLE": "1"})
    text = (ROOT / "docs" / "api.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    assert 'MODEL = "results/gpt2/model"' in code
    code = code.replace('MODEL = "results/gpt2/model"', f"MODEL = {str(model)!r}")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "docs/api.md", "exec"), namespace)
    assert 0.0 <= namespace["iia"] <= 1.0 and namespace["trained"].weight.shape == (namespace["site"].n, 16)
    assert (tmp_path / "my_das" / "weights.safetensors").is_file() and any((tmp_path / "my_das_pyvene").iterdir())
    from causal_das.das import engine

    loaded = engine.TrainedIntervention.load(tmp_path / "my_das")
    assert (engine.predict(namespace["site"], loaded, namespace["test"]) == engine.predict(namespace["site"], namespace["trained"], namespace["test"])).all()
