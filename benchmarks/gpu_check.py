"""One command that checks a GPU machine: does this code run there, compute what the CPU computes,
and how fast. Run from the repository root; on one GPU it is sized to take under 10 minutes (about 8 on
an H200, measured in parts: docs/engines.md#on-a-gpu).

    python benchmarks/gpu_check.py                    # writes results/gpu_check.json, prints a table
    python benchmarks/gpu_check.py --device cpu       # the same checks on the CPU at tiny sizes (the tests run this)

1. CUDA: whether the installed torch is a CUDA build and sees a GPU; if not, how to get one (and,
   without --device cpu, nothing else runs and the exit status is 1).
2. Equivalence (gpu_check_cases.py): every site type (MLP, CNN rows and flat, GPT-2 at all tokens and
   at some, every other supported decoder) x engine (fast; pyvene where it maps the model) x
   precision (fp32, tf32, bf16 on CUDA; fp32, bf16 on the CPU) on the device against the same run on
   the CPU in fp32: trained W, predictions, W's orthonormality and the fp32 interchange, each within
   its stated tolerance.
3. Scripts: each step of the main job (and the known-answer network's training, which runs
   interchange intervention training) at its --quick sizes with --device, into a temporary
   directory: exit status and seconds.
4. Speed (gpu_check_speed.py): a fast and a pyvene DAS training step at the thesis's shape (GPT-2
   small: 12 blocks x 768, all six tokens, k 64; random weights), batch 128 and 1280, every layer;
   seconds per step and the speed-up.
5. The thesis sweep's (`run_das.py --preset thesis`) wall time estimated from those steps.

Exit status 0 when every check of 2 and 3 passes (and 4 ran); the issue's goals on one H200 are
reported beside, not judged into the status: they are targets, not correctness.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The check says where it is in one line per step; the bars of its many tiny trainings would bury
# them. tqdm reads this when it is imported, which torch already does.
os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the helper modules beside this script

import gpu_check_cases as cases  # noqa: E402
import gpu_check_speed as speed  # noqa: E402

from causal_das.runtime import devices  # noqa: E402
from causal_das.runtime.cli import ArgumentParser, positive_int, run_main  # noqa: E402
from causal_das.runtime.io import atomic_write_json, check_results_path, run_metadata  # noqa: E402

PRECISIONS = {"cuda": ("fp32", "tf32", "bf16"), "cpu": ("fp32", "bf16")}  # tf32 is a CUDA mode (devices.setup)
DEFAULT_PRECISION = {"cuda": "tf32", "cpu": "fp32"}  # what --precision auto gives (devices.setup)
# pytorch.org's CUDA wheel index has one variant per supported CUDA version: torch 2.9's were cu126,
# cu128 and cu130 (pytorch.org/get-started/previous-versions); those of later releases could not be
# checked offline, so the advice names the index and one example.
CUDA_WHEEL_EXAMPLE = "cu128"
# Issue 28's goals on one H200, reported beside the checks.
GOALS = {"speedup_min": 20.0, "thesis_sweep_max_seconds": 30 * 60, "main_job_max_seconds": 3 * 60}
EXTRA_STEPS = ("known_answer_model",)  # beyond the default main job: train_gpt2.py --induce (IIT)


def say(message: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {message}", flush=True)


def cuda_status() -> dict:
    """The installed torch's CUDA build and GPU, and what to do when there is none."""
    version = torch.__version__.split("+")[0]
    status = {"torch": torch.__version__, "cuda_build": torch.version.cuda, "gpu_visible": torch.cuda.is_available()}
    if status["gpu_visible"]:
        status.update(gpu=torch.cuda.get_device_name(0), gpu_count=torch.cuda.device_count())
    elif torch.version.cuda is None:
        status["advice"] = (f"torch {torch.__version__} is a CPU-only build; install a CUDA build of the same version from the CUDA wheel "
                            f"index of pytorch.org, e.g. pip install torch=={version} --index-url https://download.pytorch.org/whl/"
                            f"{CUDA_WHEEL_EXAMPLE} (pick the cuXYZ your driver supports: nvidia-smi shows it)")
    else:
        status["advice"] = (f"torch {torch.__version__} is built for CUDA {torch.version.cuda} but sees no GPU; check the driver "
                            "(nvidia-smi) and CUDA_VISIBLE_DEVICES")
    return status


def equivalence(args, device: str) -> list[dict]:
    built = cases.build_cases(args.sites, say)
    rows = []
    for case in built:
        for engine_name in case.engines():
            reference = cases.run(case, engine_name, "cpu", "fp32")
            for precision in args.precisions:
                if engine_name == "pyvene" and precision != "fp32":
                    continue  # the pyvene engine runs in IEEE fp32 whatever --precision (engine.train/predict): its fp32 run again
                # Determinism is measured once per site, at the precision the scripts use by default.
                repeat = engine_name == "fast" and precision == DEFAULT_PRECISION[device]
                row = cases.check(case, engine_name, device, precision, reference, repeat)
                rows.append(row)
                detail = row.get("error") or "; ".join(row["failures"]) or (
                    f"max |dW| {row['w_max_abs_diff']:.1e}" if row["w_max_abs_diff"] is not None else "W not comparable")
                if "repeat_identical" in row:
                    detail += f"; a second run {'bit-identical' if row['repeat_identical'] else 'differs'}"
                say(f"{case.name} {engine_name} {precision}: {row['status']} ({detail})")
        if case.pyvene:
            rows.append({"site": case.name, "engine": "pyvene", "device": device, "status": "not applicable", "reason": case.pyvene})
    return rows


def _pipeline():
    """run_pipeline.py as a module: its steps at --quick sizes are the scripts' small mode."""
    spec = importlib.util.spec_from_file_location("run_pipeline", ROOT / "run_pipeline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def script_steps(selection: list[str], root: Path) -> list[tuple[str, str, list[str]]]:
    """(name, script, arguments) of the chosen main-job steps at --quick sizes; ValueError naming an
    unknown step."""
    pipeline = _pipeline()
    steps = [(name, script, arguments) for name, script, arguments, _ in pipeline.steps(root, True)
             if name in EXTRA_STEPS or name not in (*pipeline.KNOWN_ANSWER, *pipeline.SEED_STEPS, "compare")]
    if selection == ["all"]:
        return steps
    if selection == ["none"]:
        return []
    known = [name for name, *_ in steps]
    unknown = [name for name in selection if name not in known]
    if unknown:
        raise ValueError(f"--scripts {' '.join(unknown)}: no such step; choose all, none or steps of {', '.join(known)}")
    return [step for step in steps if step[0] in selection]


def run_scripts(args, device: str) -> list[dict]:
    pipeline = _pipeline()
    rows, failed = [], set()
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        for name, script, arguments in script_steps(args.scripts, Path(tmp)):
            if name not in pipeline.NO_NETWORK:
                arguments = [*arguments, "--device", device, "--precision", args.script_precision]
            missing = [need for need in pipeline.NEEDS.get(name, ()) if need in failed]
            if missing:
                failed.add(name)
                rows.append({"name": name, "script": script, "status": "skipped", "reason": f"needs {', '.join(missing)}, which failed"})
                say(f"script {name}: skipped (needs {', '.join(missing)})")
                continue
            started = time.perf_counter()
            env = {**os.environ, "TQDM_DISABLE": "1"}  # progress bars would only fill the captured output
            try:
                proc = subprocess.run([sys.executable, str(ROOT / script), *arguments], cwd=ROOT, env=env, capture_output=True, text=True,
                                      timeout=args.script_timeout)
                rc, error = proc.returncode, (proc.stderr.strip().splitlines() or [""])[-1]
            except subprocess.TimeoutExpired:
                rc, error = None, f"timed out after {args.script_timeout} s"
            seconds = time.perf_counter() - started
            ok = rc == 0
            if not ok:
                failed.add(name)
            rows.append({"name": name, "script": script, "arguments": arguments, "rc": rc, "seconds": seconds,
                         "status": "pass" if ok else "fail", **({} if ok else {"error": error})})
            say(f"script {name} ({script}): rc {rc}, {seconds:.1f} s" + ("" if ok else f": {error}"))
    return rows


def main_job(args, device: str) -> dict:
    """The default main job on the device into a temporary directory (--main_job)."""
    with tempfile.TemporaryDirectory(prefix="gpu_check_main_") as tmp:
        command = [sys.executable, str(ROOT / "run_pipeline.py"), "--device", device, "--results_path", tmp]
        started = time.perf_counter()
        try:
            proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=args.main_job_timeout)
            rc, error = proc.returncode, (proc.stderr.strip().splitlines() or [""])[-1]
        except subprocess.TimeoutExpired:
            rc, error = None, f"timed out after {args.main_job_timeout} s"
    seconds = time.perf_counter() - started
    say(f"main job: rc {rc}, {seconds:.0f} s")
    return {"rc": rc, "seconds": seconds, **({} if rc == 0 else {"error": error})}


def goals(report: dict, device: str) -> dict:
    """The issue's goals, judged only where they are defined: the thesis shape on CUDA."""
    measured = report.get("speed") or {}
    if device != "cuda" or measured.get("shape") != "thesis":
        return {"judged": False, "why": "the goals are for the thesis shape on one GPU", **GOALS}
    out = {"judged": True, **GOALS}
    speedups = {batch: b.get("speedup_summed") for batch, b in measured["batches"].items()}
    out["speedup_met"] = {batch: s is not None and s >= GOALS["speedup_min"] for batch, s in speedups.items()}
    estimate = report.get("thesis_sweep_estimate")
    if estimate:
        default_family = speed.thesis_preset().causal_model_type  # what run_das.py --preset thesis runs
        out["thesis_sweep_met"] = estimate["families"][default_family]["seconds"] <= GOALS["thesis_sweep_max_seconds"]
    if report.get("main_job"):
        out["main_job_met"] = report["main_job"]["rc"] == 0 and report["main_job"]["seconds"] <= GOALS["main_job_max_seconds"]
    return out


def table(report: dict) -> str:
    lines = []
    t = report["tolerances"]
    per = lambda values, form: ", ".join(f"{p} {format(v, form)}" for p, v in values.items())  # noqa: E731
    lines.append(f"\nequivalence on {report['device']} against the CPU in fp32: max |dW| <= {per(t['w_max_abs_diff'], '.0e')}; "
                 f"predictions equal >= {per(t['min_equal_predictions'], '.0%')}; |W^T W - I| <= {t['orthonormality']:.0e}; "
                 f"interchange (relative) <= {t['interchange_relative']:.0e}")
    lines.append(f"{'site':<15} {'engine':<7} {'prec':<5} {'status':<7} {'max|dW|':>9} {'equal':>7} {'eq(CPU W)':>9} {'|WtW-I|':>8} "
                 f"{'interch.':>8} {'s':>6} {'rerun':>6}")

    def number(value, form):
        return format(value, form) if value is not None else "-".rjust(int(form.split(".")[0]))

    for row in report.get("equivalence", []):
        if row["status"] in ("error", "not applicable"):
            lines.append(f"{row['site']:<15} {row['engine']:<7} {row.get('precision', '-'):<5} {row['status']}: "
                         f"{row.get('error') or row.get('reason')}")
            continue
        lines.append(f"{row['site']:<15} {row['engine']:<7} {row['precision']:<5} {row['status']:<7} {number(row['w_max_abs_diff'], '9.1e')} "
                     f"{number(row['predictions_equal'], '7.3f')} {row['predictions_equal_fixed_w']:9.3f} {row['orthonormality']:8.1e} "
                     f"{number(row['interchange_rel_error'], '8.1e')} {row['seconds']:6.2f} "
                     f"{ {True: 'same', False: 'DIFFERS'}.get(row.get('repeat_identical'), '-'):>6}")
    if report.get("scripts"):
        lines.append("\nscripts (--quick sizes)")
        for row in report["scripts"]:
            lines.append(f"{row['name']:<28} {row['status']:<8} rc {row.get('rc', '-')!s:<4} {row.get('seconds', 0):6.1f} s"
                         + (f"  {row.get('error') or row.get('reason')}" if row["status"] != "pass" else ""))
    measured = report.get("speed")
    if measured and "batches" in measured:
        lines.append(f"\nspeed: {measured['shape']} shape ({measured['n_layers']} blocks x {measured['width']}), n = {measured['n']}, "
                     f"k = {measured['k']}, layers {measured['layers'][0]}..{measured['layers'][-1]}")
        lines.append(f"{'batch':>6} {'fast s/step (sum)':>18} {'pyvene s/step (sum)':>20} {'speed-up (sum)':>15} {'speed-up (middle layer)':>24}")
        for batch, b in measured["batches"].items():
            middle = b.get("speedup_middle_layer")
            lines.append(f"{batch:>6} {b['fast_sum']:18.4f} {number(b.get('pyvene_sum'), '20.4f')} {number(b.get('speedup_summed'), '14.1f')}x "
                         + (f"{middle['speedup']:18.1f}x (L{middle['layer']})" if middle else ""))
    estimate = report.get("thesis_sweep_estimate")
    if estimate:
        families = ", ".join(f"{family} {f['seconds'] / 60:.1f} min ({f['trained_cells']} trained cells, each also on the random-init "
                             "control)" for family, f in estimate["families"].items())
        lines.append(f"\nrun_das.py --preset thesis on {report['device']}, estimated: {families}; both families "
                     f"{estimate['seconds_both_families'] / 60:.1f} min")
    if report.get("speed_error"):
        lines.append(f"speed: {report['speed_error']}")
    lines.append(f"\n{'PASSED' if report['passed'] else 'FAILED'} in {report['seconds']:.0f} s; {report['out']}")
    return "\n".join(lines)


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                            epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="the device checked against the CPU; cpu runs every check on the CPU (tiny shape by default), as the tests do")
    parser.add_argument("--out", default="results/gpu_check.json", help="the JSON report")
    parser.add_argument("--sites", nargs="+", choices=cases.SITE_TYPES, default=list(cases.SITE_TYPES),
                        help="site types of the equivalence check (default: all)")
    parser.add_argument("--precisions", nargs="+", choices=("fp32", "tf32", "bf16"), default=None,
                        help="precisions of the equivalence check (default: fp32 tf32 bf16 on CUDA, fp32 bf16 on the CPU)")
    parser.add_argument("--scripts", nargs="+", default=["all"],
                        help="main-job steps to run at --quick sizes with --device: all (default), none, or step names (e.g. hierarchical_equality)")
    parser.add_argument("--script_precision", choices=devices.PRECISIONS, default="auto", help="--precision given to the scripts")
    parser.add_argument("--script_timeout", type=positive_int, default=300, help="seconds after which a script counts as failed")
    parser.add_argument("--shape", choices=("auto", *speed.SHAPES), default="auto",
                        help="network of the speed part: thesis (GPT-2 small: 12 x 768) or tiny (2 x 32); auto: thesis on CUDA, tiny on the CPU")
    parser.add_argument("--batch_sizes", type=positive_int, nargs="+", default=[128, speed.thesis_preset().batch_size],
                        help="batch sizes of the timed steps (the thesis preset's batch is always timed: the estimate needs it)")
    parser.add_argument("--timing_layers", type=int, nargs="+", default=None, help="layers timed (default: every block)")
    parser.add_argument("--fast_steps", type=positive_int, default=5, help="timed fast and floor steps per layer (median, after a warm-up step)")
    parser.add_argument("--pyvene_steps", type=int, default=2, help="timed pyvene steps per layer (median); 0 skips pyvene")
    parser.add_argument("--skip_speed", action="store_true", help="skip the speed part and the estimate")
    parser.add_argument("--main_job", action="store_true",
                        help="also time the default main job (run_pipeline.py --device DEVICE into a temporary directory): the 3-minute goal")
    parser.add_argument("--main_job_timeout", type=positive_int, default=900, help="seconds after which the main job counts as failed")
    args = parser.parse_args(argv)
    allowed = PRECISIONS[args.device]
    args.precisions = args.precisions or list(allowed)
    if any(p not in allowed for p in args.precisions):
        parser.error(f"--precisions on {args.device}: choose from {', '.join(allowed)}")
    if args.script_precision == "tf32" and args.device == "cpu":
        parser.error("--script_precision tf32 is a CUDA mode; on the CPU use auto, fp32 or bf16")
    if args.pyvene_steps < 0:
        parser.error(f"--pyvene_steps must be >= 0, got {args.pyvene_steps}")
    args.shape = ("thesis" if args.device == "cuda" else "tiny") if args.shape == "auto" else args.shape
    try:
        script_steps(args.scripts, ROOT / "results")  # only the names are checked here: nothing runs or is written
    except ValueError as error:
        parser.error(str(error))
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    check_results_path(Path(args.out).parent, "--out")  # fails before minutes of checks, not after
    started = time.perf_counter()
    report = {"experiment": "gpu_check", "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
              "config": vars(args), "device": args.device, "cuda": cuda_status(), "out": args.out,
              "tolerances": {"w_max_abs_diff": cases.W_TOLERANCE, "min_equal_predictions": cases.MIN_EQUAL_PREDICTIONS,
                             "orthonormality": cases.ORTHONORMALITY_TOLERANCE, "interchange_relative": cases.INTERCHANGE_TOLERANCE}}
    say(f"torch {torch.__version__}, CUDA build {torch.version.cuda}, GPU: {report['cuda'].get('gpu', 'none')}")
    if "advice" in report["cuda"]:
        say(report["cuda"]["advice"])
        if args.device == "cuda":
            report.update(passed=False, seconds=time.perf_counter() - started, **run_metadata())
            atomic_write_json(Path(args.out), report)
            say(f"no GPU to check (--device cpu runs the checks on the CPU); wrote {args.out}")
            return 1
    report["equivalence"] = equivalence(args, args.device)
    report["scripts"] = run_scripts(args, args.device)
    if not args.skip_speed:
        try:
            report["speed"] = speed.measure(args.shape, devices.setup(args.device, "auto"), args.batch_sizes, args.timing_layers,
                                            args.fast_steps, args.pyvene_steps, say)
            report["thesis_sweep_estimate"] = speed.estimate_thesis_sweep(report["speed"])
        except Exception as error:  # a failure on the device is reported in the JSON, not lost in a traceback
            report["speed_error"] = f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0]}"
            say(f"speed: {report['speed_error']}")
    if args.main_job:
        report["main_job"] = main_job(args, args.device)
    report["goals"] = goals(report, args.device)
    report["passed"] = (all(row["status"] in ("pass", "not applicable") for row in report["equivalence"])
                        and all(row["status"] == "pass" for row in report.get("scripts", []))
                        and "speed_error" not in report)
    report.update(seconds=time.perf_counter() - started, **run_metadata())
    atomic_write_json(Path(args.out), report)
    print(table(report))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    run_main(lambda: sys.exit(main()))
