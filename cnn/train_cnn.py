"""Train the ellipse CNN of the second seed: 28x28 images of one grey ellipse, label 1 iff
0.4 (circularity' + colour' + area') > 0.6 with each latent scaled to [0, 1]. The seed's recipe by
default (50,000 images, Adam 1e-4, batch 256, 5 epochs; held-out accuracy ~0.91 in the seed).

    python cnn/train_cnn.py                         # -> results/cnn/model/
    python cnn/train_cnn.py --epochs 10 --output_dir models/cnn_10ep
"""

from pathlib import Path

from causal_das.experiments import cnn_training
from causal_das.runtime.cli import ArgumentParser, positive_float, positive_int, run_main, setup_logging
from causal_das.runtime.devices import add_device_flags


def main():
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    d = cnn_training.CNNRunConfig()
    parser.add_argument("--output_dir", default=d.output_dir, help="where model.safetensors, cnn.json, training.json and examples.png go")
    parser.add_argument("--n_train", type=positive_int, default=d.n_train, help="training images")
    parser.add_argument("--n_test", type=positive_int, default=d.n_test, help="held-out images for the reported accuracy")
    parser.add_argument("--epochs", type=positive_int, default=d.epochs, help="training epochs")
    parser.add_argument("--batch_size", type=positive_int, default=d.batch_size, help="training batch size")
    parser.add_argument("--lr", type=positive_float, default=d.lr, help="Adam learning rate")
    parser.add_argument("--seed", type=int, default=d.seed, help="seed for the images, the initialisation and the batch order")
    parser.add_argument("--quick", action="store_true", help="tiny sizes for a smoke test (seconds); the accuracy is not meaningful")
    parser.add_argument("--retrain", action="store_true",
                        help="train even if --output_dir holds a CNN trained with these flags (by default it is reused)")
    parser.add_argument("--verbose", action="store_true", help="log every epoch's loss")
    add_device_flags(parser)
    args = parser.parse_args()
    setup_logging(args.verbose)
    if args.quick:
        args.n_train, args.n_test, args.epochs = 2048, 512, 1
    config = cnn_training.CNNRunConfig(**{k: v for k, v in vars(args).items() if k in cnn_training.CNNRunConfig.__dataclass_fields__})
    record = cnn_training.train_and_save(config)
    figure = cnn_training.plot_examples(Path(config.output_dir) / "examples.png", config.seed)
    print(
        f"ellipse CNN ({record['parameters']:,} parameters): held-out accuracy {record['heldout_accuracy']:.4f} on {config.n_test} images "
        f"(majority {record['heldout_majority']:.3f}), training accuracy {record['train_accuracy']:.4f}, {record['seconds']:.0f} s\n"
        f"wrote {config.output_dir}/ and {figure}"
    )


if __name__ == "__main__":
    run_main(main)
