"""The side-by-side runner of the main job (`runtime.scheduler`): a step starts only after the steps
it needs, steps that do not need each other overlap, each step's output is printed whole, and a
failure stops new steps and names the failed one."""

import re
import time
from pathlib import Path

import pytest

from causal_das.runtime.scheduler import Step, StepFailed, run_side_by_side

SCRIPT = """
import os, sys, time
name, seconds, code = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
with open(os.path.join(sys.argv[4], name + ".times"), "w") as f:
    f.write(f"{time.time()} ")
    time.sleep(seconds)
    f.write(f"{time.time()} {os.environ['OMP_NUM_THREADS']}")
print(f"result of {name}")
if code:
    print(f"{name} went wrong", file=sys.stderr)
sys.exit(code)
"""


def make_steps(tmp_path: Path, spec: dict) -> list[Step]:
    script = tmp_path / "step.py"
    script.write_text(SCRIPT)
    return [Step(name, script, (name, str(seconds), str(code), str(tmp_path)), needs) for name, (seconds, code, needs) in spec.items()]


def times(tmp_path: Path, name: str) -> tuple[float, float, int]:
    start, stop, threads = (tmp_path / f"{name}.times").read_text().split()
    return float(start), float(stop), int(threads)


def test_steps_start_after_their_needs_and_others_overlap(tmp_path, capsys):
    spec = {"model": (0.6, 0, ()), "sweep": (0.3, 0, ("model",)), "other": (0.6, 0, ()), "after_all": (0.1, 0, ("sweep", "other"))}
    run_side_by_side(make_steps(tmp_path, spec), cores=2, log_dir=tmp_path / "logs", cwd=tmp_path)
    model, sweep, other, after_all = (times(tmp_path, name) for name in spec)
    assert sweep[0] >= model[1] and after_all[0] >= max(sweep[1], other[1])
    assert other[0] < model[1]  # ran beside the model
    assert model[2] == 1 and other[2] == 1  # two steps ready on two cores: one thread each
    assert after_all[2] == 1  # alone too: the threads never depend on what runs beside
    out = capsys.readouterr().out
    for name in spec:  # each step's output whole, between its header and its done line
        assert re.search(rf"== {name}: step\.py {name} .*\nresult of {name}\n== {name} done in \d+ s", out), out
    assert (tmp_path / "logs" / "model.out").read_text() == "result of model\n"


def test_a_failed_step_stops_new_steps_and_is_named(tmp_path, capsys):
    spec = {"bad": (0.1, 3, ()), "slow": (0.8, 0, ()), "needs_bad": (0.1, 0, ("bad",)), "later": (0.1, 0, ("slow",))}
    with pytest.raises(StepFailed, match=r"step bad failed .*not started: needs_bad, later"):
        run_side_by_side(make_steps(tmp_path, spec), cores=2, log_dir=tmp_path / "logs", cwd=tmp_path)
    assert times(tmp_path, "slow")[1] > 0  # the step already running finished
    assert not (tmp_path / "needs_bad.times").exists() and not (tmp_path / "later.times").exists()
    assert "== bad failed (exit 3): bad went wrong" in capsys.readouterr().out


def test_needs_that_never_finish_are_an_error_not_a_hang(tmp_path):
    spec = {"a": (0.1, 0, ("b",)), "b": (0.1, 0, ("a",))}
    started = time.perf_counter()
    with pytest.raises(StepFailed, match="never finish"):
        run_side_by_side(make_steps(tmp_path, spec), cores=2, log_dir=tmp_path / "logs", cwd=tmp_path)
    assert time.perf_counter() - started < 5


def test_the_console_shows_where_each_step_runs(tmp_path, capsys):
    run_side_by_side(make_steps(tmp_path, {"one": (0.1, 0, ())}), cores=1, log_dir=tmp_path / "logs", cwd=tmp_path)
    assert f"-- started one, 1 core, beside nothing else; log: {tmp_path / 'logs' / 'one'}.err" in capsys.readouterr().out


def test_threads_are_an_equal_share_fixed_before_anything_runs():
    """Another thread count rounds torch's sums differently, so a step's threads depend only on the
    cores and --jobs: one thread each by default, all cores with one job at a time."""
    from causal_das.runtime.scheduler import step_threads

    assert step_threads(cores=2, jobs=2) == 1 and step_threads(cores=16, jobs=16) == 1
    assert step_threads(cores=8, jobs=2) == 4 and step_threads(cores=4, jobs=1) == 4 and step_threads(cores=2, jobs=8) == 1


def test_a_step_runs_with_its_threads_whatever_finished_first(tmp_path):
    """`late` is ready only after `quick` finishes; the other branch, `slow`, has finished by then in
    one ordering and not in the other. Either way `late` runs with one thread: alone, it would once
    have taken both cores."""
    for slow_seconds in (0.1, 1.0):
        spec = {"quick": (0.3, 0, ()), "late": (0.2, 0, ("quick",)), "slow": (slow_seconds, 0, ())}
        run_side_by_side(make_steps(tmp_path, spec), cores=2, log_dir=tmp_path / "logs", cwd=tmp_path)
        assert times(tmp_path, "late")[2] == 1
