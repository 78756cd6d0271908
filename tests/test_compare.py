"""compare_results.py's every-field comparison: the check a change that must move no result is held to."""

import json

from causal_das.runtime import compare


def test_every_field_comparison_sees_a_changed_number_and_ignores_timing(tmp_path):
    # The check a restructure is held to (compare_results.py --every_field): it must see one changed
    # field among many and ignore what legitimately differs between two runs.
    record = {"config": {"lr": 0.01}, "seconds": 3.0, "command": "run_das.py", "compute": {"cpu": "a"},
              "cells": [{"iia": 0.5, "train_seconds": 1.0}, {"iia": 0.25, "train_seconds": 2.0}]}
    for root in ("reference", "run"):
        (tmp_path / root / "gpt2").mkdir(parents=True)
    (tmp_path / "reference" / "gpt2" / "summary.json").write_text(json.dumps(record))
    moved = {**record, "seconds": 9.0, "command": "other", "compute": {"cpu": "b"},
             "cells": [{"iia": 0.5, "train_seconds": 7.0}, {"iia": 0.2500001, "train_seconds": 2.0}]}
    (tmp_path / "run" / "gpt2" / "summary.json").write_text(json.dumps(moved))
    compared = compare.field_differences(tmp_path / "reference", tmp_path / "run")
    assert compared["files"] == 1 and compared["fields"] == 3 and compared["n_differences"] == 1
    assert compared["differences"][0]["field"] == "cells[1].iia"
    (tmp_path / "run" / "gpt2" / "summary.json").write_text(json.dumps({**record, "seconds": 1.0}))
    assert compare.field_differences(tmp_path / "reference", tmp_path / "run")["n_differences"] == 0
