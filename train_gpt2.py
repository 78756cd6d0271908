"""Train the GPT-2 classifier of X+Y+Z (prompt "X+Y+Z=", 28 classes: the sum minus 3).

By default a small GPT-2 (12 blocks like GPT-2 small, width 48) is trained from scratch with a
word-level tokenizer, offline, in about two minutes on 2 CPU cores. With --base_model, a pretrained
decoder (a hub name or a local directory saved with save_pretrained; any decoder whose layers, final
norm and head are found in its structure) gets a fresh 28-class head and is fine-tuned the thesis way
(AdamW lr 2e-5, linear schedule, clip 1.0, batch 32, 50 epochs, seed 123), in fp32 even when stored
in bf16 or fp16; its tokenizer must give each number, '+' and '=' one token. Either way 20% of the
triples are held out and the held-out accuracy is reported.

With --head next_token the network is a causal LM whose answer is the next token, the sum's decimal
string ("17"): trained from scratch (a GPT-2 language model, the word-level tokenizer extended by the
sums 11..30) or fine-tuned from --base_model's own LM head (its tokenizer must give each sum one
token), on the LM's own loss over the whole vocabulary. Every later script reads it as a 28-class
classifier at the answer tokens; training.json gives the accuracy over those and over the vocabulary.

    python train_gpt2.py                                     # -> results/gpt2/model/
    python train_gpt2.py --base_model gpt2 --output_dir models/gpt2_finetuned
    python train_gpt2.py --base_model ~/models/my-llama --output_dir models/llama_finetuned
    python train_gpt2.py --head next_token --output_dir results/gpt2_next_token/model
    python train_gpt2.py --induce "(X+Y)+Z" "X+(Y+Z)" --induce_site L2:3 L4:4 --induce_where "X<=5" "X>5" \
        --output_dir results/gpt2_known_answer/model        # a network whose answer is known (IIT)
"""

from causal_das.experiments.arithmetic_training import (
    HEAD_KINDS,
    REQUIRED_HELDOUT_ACCURACY,
    SCRATCH,
    THESIS_FINETUNE,
    TrainingRunConfig,
    train_and_save,
)
from causal_das.runtime.cli import (
    ArgumentParser,
    finite_float,
    non_negative_float,
    positive_float,
    positive_int,
    run_main,
    setup_logging,
)
from causal_das.runtime.devices import add_device_flags

# How the console names each supported model type.
NAMES = {"gpt2": "GPT-2", "llama": "Llama", "qwen2": "Qwen2", "gemma2": "Gemma-2", "gpt_neox": "GPT-NeoX"}


def main():
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    d = TrainingRunConfig()
    parser.add_argument("--output_dir", default=d.output_dir, help="where the model, tokenizer, training.json and training_curves.png go")
    parser.add_argument("--base_model", default=None,
                        help="fine-tune this pretrained decoder (hub name or local directory saved with save_pretrained) "
                             "instead of training the small default from scratch")
    parser.add_argument("--head", choices=HEAD_KINDS, default=d.head,
                        help="sequence_classification: a fresh 28-class score head; next_token: a causal LM whose answer is "
                             "the next token (the sum, e.g. '17'), read at the 28 answer tokens downstream")
    parser.add_argument("--width", type=positive_int, default=d.width, help="hidden size of the from-scratch model (ignored with --base_model)")
    parser.add_argument("--n_layers", type=positive_int, default=d.n_layers, help="transformer blocks of the from-scratch model")
    parser.add_argument("--n_heads", type=positive_int, default=d.n_heads, help="attention heads of the from-scratch model")
    parser.add_argument("--epochs", type=positive_int, default=None,
                        help=f"training epochs (default {SCRATCH['epochs']} from scratch, {THESIS_FINETUNE['epochs']} fine-tuning)")
    parser.add_argument("--batch_size", type=positive_int, default=d.batch_size, help="training batch size")
    parser.add_argument("--lr", type=positive_float, default=None,
                        help=f"peak AdamW learning rate (default {SCRATCH['lr']} from scratch, {THESIS_FINETUNE['lr']} fine-tuning)")
    parser.add_argument("--weight_decay", type=non_negative_float, default=d.weight_decay, help="AdamW weight decay")
    parser.add_argument("--warmup_fraction", type=finite_float, default=None,
                        help=f"fraction of steps of linear warm-up before the linear decay (default {SCRATCH['warmup_fraction']} from scratch, 0 fine-tuning)")
    parser.add_argument("--heldout_fraction", type=finite_float, default=d.heldout_fraction, help="fraction of triples held out from training (per class)")
    parser.add_argument("--seed", type=int, default=d.seed, help="seed for the split, the initialisation and the batch order")
    parser.add_argument("--induce", nargs="+", default=None, metavar="CAUSAL_MODEL",
                        help="interchange intervention training: make the network implement these causal models, each at its "
                             "--induce_site on its --induce_where region (e.g. --induce \"(X+Y)+Z\" \"X+(Y+Z)\")")
    parser.add_argument("--induce_site", nargs="+", default=None, metavar="LAYER:POSITIONS",
                        help="one site per --induce model: the block output of a layer at token positions, e.g. L2:3 L4:4")
    parser.add_argument("--induce_where", nargs="+", default=None, metavar="CONDITION",
                        help="one region per --induce model, disjoint: a condition on X, Y, Z, e.g. \"X<=5\" \"X>5\"")
    parser.add_argument("--retrain", action="store_true",
                        help="train even if --output_dir holds a network trained with these flags (by default it is reused)")
    parser.add_argument("--verbose", action="store_true", help="log every epoch")
    add_device_flags(parser)
    args = parser.parse_args()
    setup_logging(args.verbose)
    mode = SCRATCH if args.base_model is None else THESIS_FINETUNE
    for key, value in mode.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if not 0 <= args.warmup_fraction < 1:
        parser.error(f"--warmup_fraction must be in [0, 1), got {args.warmup_fraction}")
    if not 0 < args.heldout_fraction < 1:
        parser.error(f"--heldout_fraction must be in (0, 1), got {args.heldout_fraction}")
    given = [flag for flag in ("induce", "induce_site", "induce_where") if getattr(args, flag) is not None]
    if given and (len(given) < 3 or len({len(getattr(args, flag)) for flag in given}) > 1):
        parser.error("--induce, --induce_site and --induce_where go together, one site and one region per causal model")
    args.inductions = tuple(zip(args.induce, args.induce_site, args.induce_where, strict=True)) if given else ()
    config = TrainingRunConfig(**{k: v for k, v in vars(args).items() if k in TrainingRunConfig.__dataclass_fields__})
    record = train_and_save(config)
    print(
        f"{NAMES.get(record['model']['type'], record['model']['type'])} ({record['mode']}, {record['model']['parameters']:,} parameters): "
        f"held-out accuracy {record['heldout_accuracy']:.4f} on {record['n_heldout_triples']} triples, "
        f"training accuracy {record['train_accuracy']:.4f}, {record['seconds']:.0f} s\nwrote {config.output_dir}/"
    )
    if "heldout_accuracy_vocabulary" in record:
        print(f"next-token head: held-out accuracy {record['heldout_accuracy_vocabulary']:.4f} over the whole vocabulary "
              f"({record['heldout_accuracy']:.4f} over the {len(record['answer_tokens'])} answer tokens)")
    for induction in record.get("inductions", []):
        print(f"induced {induction['causal_model']} at {induction['site']} where {induction['where']} ({induction['n_triples']} triples): "
              f"interchange accuracy {induction['heldout_interchange_accuracy']:.3f} on held-out bases, "
              f"{induction['train_interchange_accuracy']:.3f} on training bases")
    if record["heldout_accuracy"] < REQUIRED_HELDOUT_ACCURACY:
        print(f"warning: held-out accuracy is below {REQUIRED_HELDOUT_ACCURACY}; DAS needs a network that solves the task "
              "(train longer: --epochs)")


if __name__ == "__main__":
    run_main(main)
