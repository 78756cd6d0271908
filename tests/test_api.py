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
    [code] = [block for block in re.findall(r"```python\n(.*?)```", text, re.S) if 'MODEL = "results/gpt2/model"' in block]
    code = code.replace('MODEL = "results/gpt2/model"', f"MODEL = {str(model)!r}")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "docs/api.md", "exec"), namespace)
    assert 0.0 <= namespace["iia"] <= 1.0 and namespace["trained"].weight.shape == (namespace["site"].n, 16)
    assert (tmp_path / "my_das" / "weights.safetensors").is_file() and any((tmp_path / "my_das_pyvene").iterdir())
    from causal_das.das import engine

    loaded = engine.TrainedIntervention.load(tmp_path / "my_das")
    assert (engine.predict(namespace["site"], loaded, namespace["test"]) == engine.predict(namespace["site"], namespace["trained"], namespace["test"])).all()


def test_the_language_model_example_is_the_scripts_das_block():
    # docs/api.md shows the DAS block of examples/word_equality_das.py, which tests/test_word_equality.py
    # runs; the two must not drift apart.
    import textwrap

    script = (ROOT / "examples" / "word_equality_das.py").read_text()
    start = script.index("\n", script.index("    # ---- DAS, through the public API")) + 1
    block = textwrap.dedent(script[start:script.index("    # ---- end of the DAS block")]).rstrip("\n")
    assert len(block.splitlines()) <= 40
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "api.md").read_text(), re.S)
    assert block + "\n" in blocks


def test_the_analyses_example_prints_what_its_comments_say(capsys):
    # docs/api.md's analyses block on a task of its own: it runs as written, and every line it
    # prints is the value its comment states (so the comments cannot go stale).
    [code] = [block for block in re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "api.md").read_text(), re.S)
              if "from causal_das.analysis.inputs import InputTable" in block]
    exec(compile(code, "docs/api.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    stated = [line.split("#")[-1].strip() for line in code.splitlines() if line.startswith("print(")]
    assert printed == stated
