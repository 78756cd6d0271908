"""The wrong-causal-graph ablation of the thesis (`mlp/wrong_causal_graph_ablation_study.py`): an MLP
trained on ABAB pattern matching; DAS trained on each of three causal models' counterfactuals and
tested on each model's, beside the same DAS on the random-init control network.
"""

from __future__ import annotations

import time
from dataclasses import replace

from causal_das.causal_model import sample_counterfactuals
from causal_das.runtime import devices
from causal_das.runtime.io import atomic_write_json, check_results_path, run_metadata
from causal_das.runtime.provenance import Tally
from causal_das.studies.four_objects_mlp import (
    MLPExperimentConfig,
    align_layer,
    evaluate,
    random_init_copy,
    reusable,
    rng_streams,
    run_settings,
    trained_mlp,
)
from causal_das.tasks.four_objects import get_task

ABLATION_TASKS = ("pattern_matching", "aabb_and", "abba")


def run_ablation(config: MLPExperimentConfig, layer: int) -> dict:
    """Train the MLP on ABAB; train DAS on each model's counterfactuals; test on each model's.

    Each causal model's counterfactuals come from its own input sampler (so its intermediate
    variables vary) and are labelled by it; rotated dimensions are assigned to the variables in
    order (first pair -> dims of the first subspace)."""
    config = replace(config, task="pattern_matching", layers=(layer,))
    config.validate()
    devices.setup(config.device, config.precision)
    out_dir = check_results_path(config.results_path)
    started = time.perf_counter()
    streams = rng_streams(config.seed)
    model, mlp_info, fingerprint = trained_mlp(get_task("pattern_matching"), config, out_dir, streams["mlp_data"])
    settings, inputs = {**run_settings(config), "layer": layer}, {"mlp_fingerprint": fingerprint}
    tally = Tally("results.json")
    saved = reusable(out_dir / "results.json", settings, inputs, tuple(out_dir / "interventions" / t / "weights.safetensors" for t in ABLATION_TASKS),
                      tally)
    tally.print()
    if saved is not None:
        return saved
    control_model = random_init_copy(model, config.seed) if config.control == "random_init" else None
    names = [get_task(t).pattern for t in ABLATION_TASKS]
    datasets = {}
    for name in ABLATION_TASKS:
        task = get_task(name)
        datasets[name] = (
            sample_counterfactuals(task.causal_model(), task.sampler(config.object_dim), config.das_train_size, streams["das_train"]),
            sample_counterfactuals(task.causal_model(), task.sampler(config.object_dim), config.das_test_size, streams["das_test"]),
        )
    table, control_table, details = [], [], {}
    for train_name in ABLATION_TASKS:
        trained, _ = align_layer(model, layer, datasets[train_name][0], datasets[train_name][1], config, f"DAS on {get_task(train_name).pattern}")
        trained.save(out_dir / "interventions" / train_name)
        control_trained = None
        if control_model is not None:
            control_trained, _ = align_layer(control_model, layer, datasets[train_name][0], datasets[train_name][1], config, "control")
        row, control_row = [], []
        for test_name in ABLATION_TASKS:
            result = evaluate(model, layer, trained, datasets[test_name][1], config.engine)
            row.append(result["iia"])
            details[f"{train_name}->{test_name}"] = result
            if control_trained is not None:
                control_row.append(evaluate(control_model, layer, control_trained, datasets[test_name][1], config.engine)["iia"])
        table.append(row)
        control_table.append(control_row)
    payload = {
        "experiment": "wrong_causal_graph_ablation",
        "config": config.to_dict(),
        **run_metadata(),
        "layer": layer,
        "models": names,
        "config_tasks": list(ABLATION_TASKS),
        "iia": table,  # rows: DAS trained on; columns: tested on
        "control_random_init_iia": control_table if control_model is not None else None,
        "details": details,
        "mlp": mlp_info,
        "seconds": time.perf_counter() - started,
        "settings": settings,
        "inputs": inputs,
        "status": "done",
    }
    atomic_write_json(out_dir / "results.json", payload)
    return payload
