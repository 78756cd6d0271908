"""Fast engine vs pyvene engine on the hierarchical-equality MLP: IIA and training time.

Both engines train the same intervention (WX dims 0-7, YZ dims 8-15) from the same initial W on
the same batches in the same order; they differ only in how W is parametrised and in how the
network is run (cached prefix + suffix vs pyvene's hooked full forward passes). Printed: IIA of
each on the same test set, and the training-time ratio, measured side by side in one run.

    python benchmarks/bench_mlp_engines.py [--layer 0] [--das_train_size 131072]
"""

import argparse
import time

from causal_das.causal_model import sample_counterfactuals
from causal_das.das import engine
from causal_das.metrics import iia
from causal_das.models.mlp import MLPSite
from causal_das.runtime import devices
from causal_das.studies.four_objects_mlp import (
    MLPExperimentConfig,
    rng_streams,
    to_interchange,
    train_task_mlp,
)
from causal_das.tasks.four_objects import get_task


def main():
    defaults = MLPExperimentConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layer", type=int, default=0, help="hidden layer to align at")
    parser.add_argument("--das_train_size", type=int, default=defaults.das_train_size, help="counterfactual training examples")
    parser.add_argument("--das_epochs", type=int, default=defaults.das_epochs, help="DAS epochs")
    parser.add_argument("--seed", type=int, default=0, help="seed for data, MLP and W")
    devices.add_device_flags(parser)
    args = parser.parse_args()
    config = MLPExperimentConfig(das_train_size=args.das_train_size, das_epochs=args.das_epochs, seed=args.seed, device=args.device)
    devices.setup(args.device, args.precision)
    print(f"computing on {devices.describe()}")
    task = get_task(config.task)
    streams = rng_streams(config.seed)
    model, info = train_task_mlp(task, config, streams["mlp_data"])
    train_cf = sample_counterfactuals(task.causal_model(), task.sampler(config.object_dim), config.das_train_size, streams["das_train"])
    test_cf = sample_counterfactuals(task.causal_model(), task.sampler(config.object_dim), config.das_test_size, streams["das_test"])
    site = MLPSite(model, args.layer)
    train_data, test_data = to_interchange(train_cf), to_interchange(test_cf)
    print(f"MLP held-out accuracy {info['heldout_accuracy']:.4f}; DAS at layer {args.layer}, "
          f"{config.das_train_size} pairs x {config.das_epochs} epochs, batch {config.das_batch_size}")
    results = {}
    for name in ("fast", "pyvene"):
        start = time.perf_counter()
        trained = engine.train(site, train_data, config.das_config(), name, desc=name)
        seconds = time.perf_counter() - start
        predictions = engine.predict(site, trained, test_data, name).numpy()
        results[name] = (iia(predictions, test_cf)["iia"], seconds)
        print(f"  {name:7s} IIA {results[name][0]:.4f}   training {seconds:8.2f} s")
    gap = abs(results["fast"][0] - results["pyvene"][0])
    print(f"IIA gap {100 * gap:.2f} points; fast engine {results['pyvene'][1] / results['fast'][1]:.1f}x faster to train")


if __name__ == "__main__":
    main()
