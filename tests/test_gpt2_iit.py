"""Interchange intervention training (`studies.arithmetic_iit`, `train_gpt2.py --induce`): the conditions
and sites, the interchange itself against the unintervened network, and a tiny GPT-2 that learns to
obey an induced mechanism that the same network trained without it does not."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from causal_das.studies import arithmetic_decoder, arithmetic_iit
from causal_das.tasks import arithmetic as A

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--width", "16", "--n_layers", "3", "--n_heads", "2"]


def run(*args):
    return subprocess.run([sys.executable, str(ROOT / "train_gpt2.py"), *map(str, args)], capture_output=True, text=True, cwd=ROOT, timeout=600)


def test_conditions_and_sites_parse():
    x, y, z = A.TRIPLES.T
    assert np.array_equal(arithmetic_iit.Induction.parse("(X+Y)+Z", "L2:3", "X<=5", 12).region(), x <= 5)
    assert np.array_equal(arithmetic_iit.Induction.parse("X+(Y+Z)", "4:4-5", "X>Y and not Z%2==0", 12).region(), (x > y) & (z % 2 == 1))
    assert arithmetic_iit.Induction.parse("X+(Y+Z)", "L4:pos4", "1<X+Y<=10", 12).positions == (4,)
    for model, site, where, fragment in (("X+Y", "L2:3", "X<=5", "X+Y"), ("(X+Y)+Z", "L11:3", "X<=5", "0..10"),
                                         ("(X+Y)+Z", "L2:9", "X<=5", "token positions"), ("(X+Y)+Z", "two:3", "X<=5", "LAYER:POSITIONS"),
                                         ("(X+Y)+Z", "L2:3", "open('x')", "only X, Y, Z"), ("(X+Y)+Z", "L2:3", "X <=", "condition")):
        with pytest.raises(ValueError, match=re.escape(fragment)):
            arithmetic_iit.Induction.parse(model, site, where, 12)
    first, second = (arithmetic_iit.Induction.parse(m, "L1:3", w, 3) for m, w in (("(X+Y)+Z", "X<=5"), ("X+(Y+Z)", "X>=5")))
    with pytest.raises(ValueError, match="overlap on 100 triples"):
        arithmetic_iit.check_disjoint([first, second])
    labels = arithmetic_iit.induced_labels([{"causal_model": "(X+Y)+Z", "where": "X<=5"}, {"causal_model": "X+(Y+Z)", "where": "X>7"}])
    assert labels.count("(X+Y)+Z") == 500 and labels.count("X+(Y+Z)") == 300 and labels.count("unexplained") == 200


def test_the_interchange_swaps_the_sites_block_output():
    tokenizer = arithmetic_decoder.build_tokenizer()
    model = arithmetic_decoder.build_default_model(tokenizer, width=16, n_layers=3, n_heads=2).eval()
    ids = arithmetic_decoder.encode_prompts(tokenizer)
    base, source = torch.arange(0, 40), torch.arange(500, 540)
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        # Every position swapped: the suffix sees only the source; the base swapped with itself: the base.
        everything = arithmetic_iit.interchange_logits(model, ids, base, source, 1, range(6))
        itself = arithmetic_iit.interchange_logits(model, ids, base, base, 1, (3,))
        one = arithmetic_iit.interchange_logits(model, ids, base, source, 1, (3,))
    torch.testing.assert_close(everything, plain[source], atol=1e-5, rtol=0)
    torch.testing.assert_close(itself, plain[base], atol=1e-5, rtol=0)
    assert not torch.allclose(one, plain[base]) and not torch.allclose(one, plain[source])


def test_a_tiny_gpt2_learns_the_induced_mechanism(tmp_path):
    induce = ["--induce", "(X+Y)+Z", "--induce_site", "L1:3", "--induce_where", "X<=5"]
    proc = run("--output_dir", tmp_path / "iit", "--epochs", "12", *TINY, *induce)
    assert proc.returncode == 0, proc.stderr
    assert "induced (X+Y)+Z at L1:3 where X<=5 (500 triples)" in proc.stdout
    record = json.loads((tmp_path / "iit" / "training.json").read_text())
    assert record["settings"]["inductions"] == [["(X+Y)+Z", "L1:3", "X<=5"]]
    (induced,) = record["inductions"]
    # The same network trained without the induction, measured on the same interchanges.
    assert run("--output_dir", tmp_path / "plain", "--epochs", "12", *TINY).returncode == 0
    model, tokenizer = arithmetic_decoder.load_classifier(tmp_path / "plain")
    heldout = np.array(record["heldout_triples"])
    untrained = arithmetic_iit.interchange_accuracy(model, arithmetic_decoder.encode_prompts(tokenizer), arithmetic_iit.Induction("(X+Y)+Z", 1, (3,), "X<=5"), heldout)
    assert induced["heldout_interchange_accuracy"] > untrained + 0.2, (induced, untrained)
    # The same flags reuse the network; the induction is part of what it was trained with.
    again = run("--output_dir", tmp_path / "iit", "--epochs", "12", *TINY, *induce)
    assert again.returncode == 0 and "reusing" in again.stdout
