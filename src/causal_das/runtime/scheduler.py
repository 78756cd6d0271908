"""Running the main job's steps side by side: each step a child process, started as soon as the
steps it needs have finished, with the CPU's cores shared among the steps that run.

Why: on a small CPU most steps are bound by per-operation overhead rather than arithmetic, so two
steps with one thread each finish sooner than the same two one after the other with two threads
each (docs/engines.md#the-main-job-side-by-side). A step's console output is printed whole when it
finishes, never interleaved with another's; its progress bars and warnings go to its log file.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from causal_das.runtime.progress import INNER_BARS


@dataclass(frozen=True)
class Step:
    """One step of a job: `python script *arguments`, after the steps named in `needs`."""

    name: str
    script: Path
    arguments: tuple[str, ...]
    needs: tuple[str, ...] = ()
    # Takes `--executor processes --workers N` to spread its cells over N one-thread processes.
    spreads: bool = False


class StepFailed(ValueError):
    pass


def available_cores() -> int:
    """The cores this process may run on (a container's or `taskset`'s limit included)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _last_line(path: Path) -> str:
    """The last line a step wrote to stderr that is not a progress bar (its error, typically)."""
    text = path.read_text(errors="replace") if path.is_file() else ""
    lines = [line.strip() for line in text.replace("\r", "\n").splitlines()]
    lines = [line for line in lines if line and "it/s]" not in line and "s/it]" not in line and not line.endswith("?it/s]")]
    return lines[-1] if lines else "(no message)"


@dataclass
class _Running:
    step: Step
    process: subprocess.Popen
    cores: int
    started: float
    out: Path
    err: Path
    command: str
    where: str  # how it runs: on how many cores, or in how many worker processes


def step_threads(cores: int, jobs: int) -> int:
    """The torch threads of every step that does not spread its cells: an equal share of the cores
    among the steps that may run at once, fixed before anything runs. Not the free cores at its
    start: torch's sums round differently with another number of threads (the known-answer GPT-2
    trained with one thread and with two ends at other weights, another division and another
    classifier), so a share that depended on what happened to run beside a step, or on which other
    steps a command asked for, would give the same step other files. (A step that spreads its
    cells over one-thread workers gives the same numbers with any number of them; its share stays
    dynamic.)"""
    return max(1, cores // max(1, min(jobs, cores)))


def _launch(step: Step, cores: int, log_dir: Path, cwd: Path) -> _Running:
    arguments = list(step.arguments)
    threads = cores
    if step.spreads and cores > 1:
        # Its share as one-thread worker processes. (One worker per core of the machine whatever the
        # share, so that a step left running alone takes the freed cores, was measured slower: the
        # main job took 752 s instead of 712, every step slowed by the extra processes.)
        arguments += ["--executor", "processes", "--workers", str(cores)]
        threads = 1  # the driver only gathers
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), INNER_BARS: "0",
           "PYTHONUNBUFFERED": "1", "TQDM_MININTERVAL": "5"}  # a bar line every few seconds in the log, not ten a second
    out, err = log_dir / f"{step.name}.out", log_dir / f"{step.name}.err"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        process = subprocess.Popen([sys.executable, str(step.script), *arguments], cwd=cwd, env=env, stdout=stdout, stderr=stderr)
    command = f"{step.script.name} {' '.join(arguments)}"
    where = f"{cores} one-thread worker processes" if threads < cores else f"{cores} core{'s' * (cores > 1)}"
    return _Running(step, process, cores, time.perf_counter(), out, err, command, where)


def run_side_by_side(steps: list[Step], cores: int, log_dir: Path, cwd: Path, jobs: int | None = None) -> None:
    """Runs every step once the steps it needs (those of `steps` it names) have finished, at most
    `jobs` at once (default: one per core), sharing `cores`: a step gets `step_threads` (and
    starts when that many cores are free); a step that `spreads` gets the free cores minus one
    for each other step ready to start, at least one, as one-thread worker processes. Ready steps
    start in the order of `steps` (put the longest chain first).
    Prints each step's output when it finishes; its progress and warnings are in `log_dir`.
    Raises StepFailed after the running steps finish if a step failed (no new step starts then)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    names = {step.name for step in steps}
    jobs = jobs or cores
    threads = step_threads(cores, jobs)
    pending, running, done, failed = list(steps), [], set(), []
    try:
        while pending or running:
            if not failed:
                ready = [s for s in pending if all(n in done or n not in names for n in s.needs)]
                for position, step in enumerate(ready):
                    free = cores - sum(r.cores for r in running)
                    share = max(1, free - (len(ready) - position - 1)) if step.spreads else threads
                    if free < min(share, cores) or free <= 0 or len(running) >= jobs:
                        break
                    running.append(_launch(step, share, log_dir, cwd))
                    pending.remove(step)
                    others = ", ".join(r.step.name for r in running[:-1]) or "nothing else"
                    print(f"-- started {step.name}, {running[-1].where}, beside {others}; log: {log_dir / step.name}.err", flush=True)
            elif not running:
                break
            if not running and pending and not failed:
                raise StepFailed(f"steps {', '.join(s.name for s in pending)} need steps that never finish (a cycle in their needs)")
            time.sleep(0.2)
            for item in [r for r in running if r.process.poll() is not None]:
                running.remove(item)
                seconds = time.perf_counter() - item.started
                print(f"== {item.step.name}: {item.command}", flush=True)
                sys.stdout.write(item.out.read_text(errors="replace"))
                if item.process.returncode == 0:
                    done.add(item.step.name)
                    print(f"== {item.step.name} done in {seconds:.0f} s\n", flush=True)
                else:
                    failed.append(item.step.name)
                    print(f"== {item.step.name} failed (exit {item.process.returncode}): {_last_line(item.err)}\n   its log: {item.err}",
                          flush=True)
    except KeyboardInterrupt:
        # The terminal sent every child the interrupt too: give each a moment to save and stop.
        for item in running:
            try:
                item.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                item.process.kill()
        raise
    if failed:
        skipped = [s.name for s in pending]
        raise StepFailed(f"step {failed[0]} failed (its error is above){'; not started: ' + ', '.join(skipped) if skipped else ''}; "
                         "finished steps keep their results")
