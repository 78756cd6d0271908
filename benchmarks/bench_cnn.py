"""Fast engine vs pyvene engine on the ellipse CNN: IIA and DAS training time, side by side.

Both engines train the same intervention (circularity+colour, one subspace, the seed's recipe)
from the same initial W on the same batches in the same order, at the same site; they differ in
how W is parametrised and how the network is run (cached prefix + suffix vs pyvene's hooked full
forward passes of base and source every step). Printed: each engine's IIA on the same test pairs
and the training-time ratio. Needs a trained CNN (python cnn/train_cnn.py).

    python benchmarks/bench_cnn.py [--layer conv1] [--site_view rows] [--n_train 10000] [--mode single]
"""

import argparse
import time

import numpy as np

from causal_das.das import engine
from causal_das.experiments import cnn_das
from causal_das.models import cnn
from causal_das.models.cnn import LAYERS, VIEWS, CNNSite
from causal_das.runtime import devices
from causal_das.tasks import ellipse


def main():
    d = cnn_das.EllipseDASConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_path", default=d.model_path, help="the CNN saved by cnn/train_cnn.py")
    parser.add_argument("--layer", choices=LAYERS, default="conv1", help="layer whose output DAS intervenes on")
    parser.add_argument("--site_view", choices=VIEWS, default="rows", help="rows (the seed's) or flat")
    parser.add_argument("--mode", choices=ellipse.MODES, default="single", help="single- or multi-source")
    parser.add_argument("--intervention_size", type=int, default=d.intervention_size, help="dimensions per subspace")
    parser.add_argument("--n_train", type=int, default=d.n_train, help="training pairs")
    parser.add_argument("--n_test", type=int, default=2000, help="test pairs")
    parser.add_argument("--epochs", type=int, default=1, help="DAS epochs (1 is enough for a time ratio)")
    devices.add_device_flags(parser)
    args = parser.parse_args()
    config = cnn_das.EllipseDASConfig(mode=args.mode, layers=(args.layer,), site_view=args.site_view, intervention_size=args.intervention_size,
                                 n_train=args.n_train, n_test=args.n_test, epochs=args.epochs)
    config.validate()
    model = cnn.load(args.model_path, devices.setup(args.device, args.precision))  # W comes back to the CPU: timings include the sync
    print(f"computing on {devices.describe()}")
    pools = cnn_das.Pools.draw(config)
    subset = config.variables[0]
    train_pairs, test_pairs = pools.pairs(config, subset)
    train_data = cnn_das.to_interchange(pools.train_images, train_pairs)
    test_data = cnn_das.to_interchange(pools.test_images, test_pairs)
    site = CNNSite(model, args.layer, args.site_view)
    print(f"DAS at {site.name} ({site.rows} x {site.n}), {args.mode}-source {'+'.join(subset)}, "
          f"k = {args.intervention_size}, {args.n_train} pairs x {config.das_epochs} epoch(s), batch {config.batch_size}")
    results = {}
    for name in ("fast", "pyvene"):
        start = time.perf_counter()
        trained = engine.train(site, train_data, engine.DASConfig(
            (args.intervention_size,) * train_data.n_variables, config.das_epochs, config.batch_size, config.lr, config.seed), name, desc=name)
        seconds = time.perf_counter() - start
        predictions = engine.predict(site, trained, test_data, name).numpy()
        results[name] = (float(np.mean(predictions == test_pairs.labels)), seconds)
        print(f"  {name:7s} IIA {results[name][0]:.4f}   training {seconds:8.2f} s")
    gap = abs(results["fast"][0] - results["pyvene"][0])
    print(f"IIA gap {100 * gap:.2f} points; fast engine {results['pyvene'][1] / results['fast'][1]:.1f}x faster to train")


if __name__ == "__main__":
    main()
