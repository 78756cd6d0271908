"""DAS on the ellipse CNN: localise circularity, colour and/or area in one layer's output.

Single-source (--mode single): every chosen variable takes its value from one source image, through
one subspace of --intervention_size rotated dimensions. Multi-source (--mode multi): one rotation,
one disjoint subspace of --intervention_size dimensions per variable, variable i from source i;
trained and tested on multi-source pairs. Each (variable subset, layer) is a cell with its own
JSON and W under --results_path; a rerun skips finished cells. After the run, every cell in
--results_path is gathered into summary.json, iia.png and (for single variables) layers.png.

    python cnn/ellipse_das.py                                           # circularity+colour, conv1, 64 dims
    python cnn/ellipse_das.py --mode multi                              # circularity and colour, one source each
    python cnn/ellipse_das.py --site_view flat                          # one low-rank rotation over the 12,544-dim map
    python cnn/ellipse_das.py --variables circularity colour area --layer conv1 conv2 conv3
    python cnn/ellipse_das.py --variables circularity colour area --layer fc1 --intervention_size 1
"""

import argparse
from pathlib import Path

from causal_das.experiments import cnn_das
from causal_das.models.cnn import LAYERS, VIEWS
from causal_das.runtime.cli import (
    ArgumentParser,
    add_common_flags,
    positive_float,
    positive_int,
    run_main,
    setup_logging,
)
from causal_das.tasks import ellipse

QUICK = dict(n_train=512, n_test=256, epochs=1)


def variable_subset(text: str) -> tuple[str, ...]:
    try:
        return ellipse.parse_variables(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def main():
    parser = ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    d = cnn_das.EllipseDASConfig()
    parser.add_argument("--variables", type=variable_subset, nargs="+", default=None,
                        help=f"one or more variable subsets, each comma-separated from {', '.join(ellipse.VARIABLES)} "
                             "(default circularity,colour); 'circularity colour area' runs three single-variable cells")
    parser.add_argument("--mode", choices=ellipse.MODES, default=d.mode,
                        help="single: one source for all chosen variables; multi: one source and one subspace per variable")
    parser.add_argument("--intervention_size", type=positive_int, default=d.intervention_size,
                        help="rotated dimensions per subspace (multi: per variable); at most the site's dimension (448 per row at conv layers, 3 at fc1)")
    parser.add_argument("--layer", nargs="+", choices=LAYERS, default=list(d.layers), help="layer(s) whose output DAS intervenes on")
    parser.add_argument("--site_view", choices=VIEWS, default=d.site_view,
                        help="rows: a conv map as rows of C*W numbers sharing one rotation (the seed's view); flat: one rotation over the whole map")
    parser.add_argument("--model_path", default=d.model_path, help="the CNN saved by cnn/train_cnn.py")
    parser.add_argument("--epochs", type=positive_int, default=None, help="DAS epochs (default: the seed's 3 single-source, 2 multi-source)")
    parser.add_argument("--batch_size", type=positive_int, default=d.batch_size, help="DAS batch size")
    parser.add_argument("--lr", type=positive_float, default=d.lr, help="DAS learning rate (Adam)")
    parser.add_argument("--n_train", type=positive_int, default=d.n_train, help="training pairs (over a pool of as many fresh images)")
    parser.add_argument("--n_test", type=positive_int, default=d.n_test, help="test pairs IIA is measured on (over a separate pool of as many images)")
    parser.add_argument("--control", choices=("random_init", "none"), default=d.control,
                        help="also run the same DAS on a randomly initialised CNN (random_init) or not (none)")
    add_common_flags(parser, d.results_path)
    args = parser.parse_args()
    setup_logging(args.verbose)
    values = {k: v for k, v in vars(args).items() if k in cnn_das.EllipseDASConfig.__dataclass_fields__}
    values["variables"] = tuple(dict.fromkeys(args.variables or d.variables))
    values["layers"] = tuple(dict.fromkeys(args.layer))
    if args.quick:
        values.update(QUICK)
    config = cnn_das.EllipseDASConfig(**values)
    cells = cnn_das.run_das(config)
    out = Path(config.results_path)
    summary = cnn_das.summarise(out)
    from causal_das.plots.cnn import plot_ellipse_das, plot_ellipse_layers

    figures = [plot_ellipse_das(out / "summary.json", out / "iia.png")]
    if summary["layer_table"]:
        figures.append(plot_ellipse_layers(out / "summary.json", out / "layers.png"))
    print(cnn_das.table_text(cells))
    print(f"wrote {len(cells)} cell(s) under {out}/cells/, {out}/summary.json ({len(summary['cells'])} cells) and "
          + ", ".join(map(str, figures)))


if __name__ == "__main__":
    run_main(main)
