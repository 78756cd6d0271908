"""The ellipse task, the CNN's DAS sites (against pyvene), multi-source semantics, and the scripts."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from causal_das.das import engine
from causal_das.das import pyvene_engine as pe
from causal_das.das.intervention import DistributedInterchange
from causal_das.models.cnn import CNNSite, EllipseCNN, site_geometry
from causal_das.tasks import ellipse

ROOT = Path(__file__).resolve().parents[1]
TRAIN, DAS = ROOT / "cnn" / "train_cnn.py", ROOT / "cnn" / "ellipse_das.py"


def latents(**values):
    """One image's latents from raw values (rotated False unless given)."""
    out = {name: np.array([float(values[name])]) for name in ("raw_circularity", "raw_colour", "raw_area")}
    out["rotated"] = np.array([bool(values.get("rotated", False))])
    return out


# -- the generator and the causal model ---------------------------------------------------------


def test_images_have_a_centred_ellipse_of_the_right_area_and_grey():
    lat = latents(raw_circularity=0.8, raw_colour=0.35, raw_area=30 * math.pi)
    image = ellipse.render(lat)[0, 0]
    assert image.dtype == np.float32 and image.shape == (28, 28)
    assert set(np.unique(image).tolist()) == {np.float32(0.35), 1.0}
    assert abs((image < 1).sum() - 30 * math.pi) < 0.06 * 30 * math.pi  # pixel count ~ area
    assert image[0, 0] == 1.0 and image[13, 13] == np.float32(0.35)
    # Centred: symmetric under both flips.
    assert (image == image[::-1]).all() and (image == image[:, ::-1]).all()
    # Elongated horizontally (major axis along x) unless rotated; rotation is the transpose.
    flat = ellipse.render(latents(raw_circularity=0.4, raw_colour=0.0, raw_area=30 * math.pi))[0, 0]
    turned = ellipse.render(latents(raw_circularity=0.4, raw_colour=0.0, raw_area=30 * math.pi, rotated=True))[0, 0]
    assert (flat[13] < 1).sum() > (flat[:, 13] < 1).sum()
    assert (turned == flat.T).all()


def test_render_is_vectorised_consistently_across_chunks():
    lat = ellipse.sample_latents(np.random.default_rng(0), 50)
    together = ellipse.render(lat, chunk=7)
    one_by_one = np.concatenate([ellipse.render({k: v[i : i + 1] for k, v in lat.items()}) for i in range(50)])
    assert (together == one_by_one).all()


def test_latent_ranges_and_balanced_labels():
    lat = ellipse.sample_latents(np.random.default_rng(1), 20_000)
    assert lat["raw_circularity"].min() >= 0.3 and lat["raw_circularity"].max() <= 1
    assert set(np.round(lat["raw_colour"] * 100).astype(int)) <= set(range(91))
    assert 16 * math.pi <= lat["raw_area"].min() and lat["raw_area"].max() <= 64 * math.pi
    assert 0.45 < lat["rotated"].mean() < 0.55
    assert 0.45 < ellipse.labels(lat).mean() < 0.55  # sum of three U(0,1) > 1.5: balanced


def test_label_rule():
    # Scaled (1, 1, 0): 0.4 * 2 = 0.8 > 0.6 -> 1; scaled (0.5, 0.5, 0.4): 0.56 -> 0.
    assert ellipse.labels(latents(raw_circularity=1.0, raw_colour=0.9, raw_area=16 * math.pi))[0] == 1
    assert ellipse.labels(latents(raw_circularity=0.65, raw_colour=0.45, raw_area=(16 + 0.4 * 48) * math.pi))[0] == 0


def test_single_and_multi_source_counterfactual_labels():
    pool = ellipse.sample_latents(np.random.default_rng(2), 300)
    scaled = ellipse.causal_model().run_forward(pool)
    s = np.stack([scaled[v] for v in ellipse.VARIABLES], axis=1)  # (300, 3)
    rule = lambda x: (0.4 * x.sum(1) > 0.6).astype(np.int64)  # noqa: E731

    single = ellipse.sample_pairs(pool, ("circularity", "colour"), "single", 2000, np.random.default_rng(3))
    assert single.sources.shape == (2000, 1)
    expected = s[single.base].copy()
    expected[:, :2] = s[single.sources[:, 0], :2]
    assert (single.labels == rule(expected)).all()
    assert (single.base_labels == rule(s[single.base])).all()

    multi = ellipse.sample_pairs(pool, ("circularity", "area"), "multi", 2000, np.random.default_rng(3))
    assert multi.sources.shape == (2000, 2)
    expected = s[multi.base].copy()
    expected[:, 0] = s[multi.sources[:, 0], 0]
    expected[:, 2] = s[multi.sources[:, 1], 2]
    assert (multi.labels == rule(expected)).all()
    # Not the same as taking both from either source alone.
    both_first = s[multi.base].copy()
    both_first[:, [0, 2]] = s[multi.sources[:, 0]][:, [0, 2]]
    assert (multi.labels != rule(both_first)).any()


def test_bad_variables_and_modes():
    with pytest.raises(ValueError, match="unknown variable"):
        ellipse.parse_variables("circularity,size")
    with pytest.raises(ValueError, match="twice"):
        ellipse.parse_variables("area,area")
    assert ellipse.parse_variables("colour,circularity") == ("circularity", "colour")
    pool = ellipse.sample_latents(np.random.default_rng(0), 10)
    with pytest.raises(ValueError, match="at least two variables"):
        ellipse.sample_pairs(pool, ("colour",), "multi", 5, np.random.default_rng(0))


# -- sites and engines --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cnn_and_data():
    torch.manual_seed(0)
    model = EllipseCNN().eval()
    pool = ellipse.sample_latents(np.random.default_rng(4), 48)
    images = torch.from_numpy(ellipse.render(pool))
    return model, pool, images


def interchange_data(pool, images, variables, mode, n=40, seed=5):
    pairs = ellipse.sample_pairs(pool, variables, mode, n, np.random.default_rng(seed))
    return engine.InterchangeData(images, torch.as_tensor(pairs.base), torch.as_tensor(pairs.sources), torch.as_tensor(pairs.labels))


def test_site_geometry():
    assert site_geometry("conv1", "rows") == (28, 448)
    assert site_geometry("conv2", "rows") == (14, 448)
    assert site_geometry("conv3", "rows") == (7, 448)
    assert site_geometry("conv1", "flat") == (1, 12544)
    assert site_geometry("fc1", "rows") == (1, 3)


@pytest.mark.parametrize("layer", ["conv1", "conv2", "conv3", "fc1"])
@pytest.mark.parametrize("view", ["rows", "flat"])
def test_prefix_and_suffix_recompose_the_network(cnn_and_data, layer, view):
    model, _, images = cnn_and_data
    site = CNNSite(model, layer, view)
    with torch.no_grad():
        state = site.prefix(images)
        assert state.shape == (len(images), site.rows * site.n)
        logits = site.suffix(state)
        assert (logits[:, 1] - model(images)).abs().max().item() < 1e-5 and (logits[:, 0] == 0).all()


@pytest.mark.parametrize(
    "layer,view,sizes",
    [("conv1", "rows", (64,)), ("conv1", "rows", (32, 32)), ("conv2", "rows", (20, 30)), ("conv3", "flat", (8, 8)), ("fc1", "rows", (1, 1))],
)
def test_fast_engine_matches_pyvene_on_cnn_sites(cnn_and_data, layer, view, sizes):
    """Same W: the fast engine's logits equal pyvene IntervenableModel's to 1e-5, for the rows view
    (one W shared by all rows, pyvene's keep_last_dim) and the flat view, single and multi-source."""
    model, pool, images = cnn_and_data
    variables = ("circularity", "colour") if len(sizes) == 2 else ("circularity", "colour")
    data = interchange_data(pool, images, variables, "multi" if len(sizes) == 2 else "single")
    site = CNNSite(model, layer, view)
    intervention = engine.initial_intervention(site, engine.DASConfig(sizes, seed=1))
    weight = intervention.weight().detach()
    activations = engine.cache_activations(site, data.inputs)
    with torch.no_grad():
        ours = site.suffix(engine.interchange(site, intervention, activations[data.base], activations[data.sources], weight))
        intervenable, spec = pe.build_intervenable(site, site.n, sizes, weight)
        reference = pe.intervened_logits(intervenable, spec, sizes, data.inputs[data.base], data.inputs[data.sources])
        plain = site.suffix(activations[data.base])
    assert (ours - reference).abs().max().item() < 1e-5
    assert (ours - plain).abs().max().item() > 1e-4  # the intervention did something


def test_multi_source_subspaces_are_written_from_their_own_sources(cnn_and_data):
    """In every row, the state's coordinates in variable v's subspace are those of source v, and
    outside the subspaces it is the base: the second source does not overwrite the first (the
    seed's linked interventions let it)."""
    model, pool, images = cnn_and_data
    site = CNNSite(model, "conv1", "rows")
    data = interchange_data(pool, images, ("circularity", "colour"), "multi")
    data = engine.InterchangeData(data.inputs, data.base, data.sources, data.labels)
    intervention = DistributedInterchange(site.n, (16, 16), torch.Generator().manual_seed(0))
    weight = intervention.weight().detach()
    w1, w2 = weight[:, :16], weight[:, 16:]
    states = engine.cache_activations(site, data.inputs)
    base, sources = states[data.base], states[data.sources]
    with torch.no_grad():
        mixed = engine.interchange(site, intervention, base, sources, weight)
    rows = lambda x: x.reshape(-1, site.rows, site.n)  # noqa: E731
    h, b, s1, s2 = rows(mixed), rows(base), rows(sources[:, 0]), rows(sources[:, 1])
    assert (h @ w1 - s1 @ w1).abs().max() < 1e-4
    assert (h @ w2 - s2 @ w2).abs().max() < 1e-4
    complement = torch.eye(site.n) - weight @ weight.T
    assert (h @ complement - b @ complement).abs().max() < 1e-4
    # The two sources differ in variable 1's subspace, so an overwrite would have been caught.
    assert (s2 @ w1 - s1 @ w1).abs().max() > 1e-2
    # pyvene with our per-variable subspaces does the same.
    intervenable, spec = pe.build_intervenable(site, site.n, (16, 16), weight)
    with torch.no_grad():
        reference = pe.intervened_logits(intervenable, spec, (16, 16), data.inputs[data.base], data.inputs[data.sources])
        assert (site.suffix(mixed) - reference).abs().max() < 1e-5


def test_das_recovers_a_planted_alignment_on_the_cnn():
    """Trained DAS finds the subspace at fc1 of a CNN whose logit depends on one fc1 unit only; a
    wrong subspace does not reach the same IIA (guards against a vacuous engine)."""
    torch.manual_seed(0)
    model = EllipseCNN().eval()
    pool = ellipse.sample_latents(np.random.default_rng(6), 400)
    images = torch.from_numpy(ellipse.render(pool))
    with torch.no_grad():
        units = torch.relu(model.features(images, "fc1"))
        unit = int(units.std(0).argmax())  # the liveliest unit; the logit thresholds it at its median
        model.fc2.weight.zero_()
        model.fc2.weight[0, unit] = 1.0 / units[:, unit].std()
        model.fc2.bias.fill_(-(units[:, unit].median() / units[:, unit].std()).item() + 1e-3)
    site = CNNSite(model, "fc1", "rows")
    base = torch.arange(400)
    sources = torch.roll(base, 1)[:, None]
    with torch.no_grad():
        classes = (site.suffix(site.prefix(images))[:, 1] > 0).long()
    labels = classes[sources[:, 0]]  # swapping the planted unit gives the source's class
    assert 0.3 < labels.float().mean() < 0.7 and (labels != classes).float().mean() > 0.3
    data = engine.InterchangeData(images, base, sources, labels)
    trained = engine.train(site, data, engine.DASConfig((1,), epochs=30, batch_size=64, lr=0.05, seed=0))
    iia = (engine.predict(site, trained, data) == labels).float().mean().item()
    assert iia > 0.97
    # Swapping a unit the logit ignores leaves the base's class: far from the counterfactual labels.
    other = torch.zeros(3, 1)
    other[(unit + 1) % 3] = 1.0
    wrong = engine.TrainedIntervention(trained.site, 3, (1,), other)
    assert (engine.predict(site, wrong, data) == labels).float().mean().item() < iia - 0.2


# -- the scripts ---------------------------------------------------------------------------------


def run(script, *args, check=True):
    proc = subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True, text=True, cwd=ROOT, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def trained_cnn(tmp_path_factory):
    out = tmp_path_factory.mktemp("cnn") / "model"
    run(TRAIN, "--quick", "--output_dir", out)
    return out


def test_train_cnn_writes_model_and_accuracy(trained_cnn):
    record = json.loads((trained_cnn / "training.json").read_text())
    assert 0.5 <= record["heldout_accuracy"] <= 1 and len(record["epoch_losses"]) == 1
    assert record["config"]["n_train"] == 2048 and record["versions"]["torch"]
    assert (trained_cnn / "model.safetensors").is_file() and (trained_cnn / "examples.png").stat().st_size > 1000


def test_ellipse_das_single_multi_and_resume(trained_cnn, tmp_path):
    out = tmp_path / "das"
    common = ["--quick", "--model_path", trained_cnn, "--results_path", out]
    run(DAS, *common)
    run(DAS, *common, "--mode", "multi", "--variables", "circularity,colour")
    proc = run(DAS, *common, "--variables", "area", "colour", "--layer", "conv1", "conv3")
    cells = {c["cell"]: c for c in json.loads((out / "summary.json").read_text())["cells"]}
    assert set(cells) == {
        "single_circularity+colour_conv1_rows_k64", "multi_circularity+colour_conv1_rows_k64",
        "single_colour_conv1_rows_k64", "single_colour_conv3_rows_k64", "single_area_conv1_rows_k64", "single_area_conv3_rows_k64",
    }
    multi = json.loads((out / "cells" / "multi_circularity+colour_conv1_rows_k64.json").read_text())
    assert multi["subspaces"] == {"circularity": [0, 63], "colour": [64, 127]}
    assert 0 <= multi["iia_on_single_source_pairs"] <= 1 and "control_random_init" in multi
    assert set(multi["baselines"]) == {"majority", "copy_base_label", "copy_source_label", "network_no_intervention"}
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["layer_table"]) == {"colour", "area"} and set(summary["layer_table"]["area"]) == {"conv1", "conv3"}
    assert (out / "iia.png").stat().st_size > 1000 and (out / "layers.png").stat().st_size > 1000
    assert "single_area_conv3_rows_k64" in proc.stdout
    # A rerun skips every finished cell and changes none of them.
    before = {p: p.read_bytes() for p in (out / "cells").glob("*.json")}
    again = run(DAS, *common, "--variables", "area", "colour", "--layer", "conv1", "conv3")
    assert "reusing 4 of 4 cells computed earlier" in again.stdout
    assert {p: p.read_bytes() for p in (out / "cells").glob("*.json")} == before


def test_ellipse_das_through_pyvene(trained_cnn, tmp_path):
    """The pyvene engine runs the same cells (rows view, W shared by the rows; multi-source linked)."""
    for mode in ("single", "multi"):
        run(DAS, "--quick", "--engine", "pyvene", "--control", "none", "--mode", mode, "--intervention_size", "16",
            "--model_path", trained_cnn, "--results_path", tmp_path)
    cells = json.loads((tmp_path / "summary.json").read_text())["cells"]
    assert {c["mode"] for c in cells} == {"single", "multi"}
    assert all(c["settings"]["engine"] == "pyvene" and 0 <= c["iia"] <= 1 for c in cells)


def files_under(path: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in path.rglob("*") if p.is_file()} if path.exists() else {}


@pytest.mark.parametrize(
    "args,message",
    [
        (["--variables", "circularity,size"], "unknown variable"),
        (["--layer", "fc1"], "do not fit the fc1 site"),
        (["--intervention_size", "449"], "do not fit the conv1 site"),
        (["--mode", "multi", "--variables", "colour"], "needs at least two variables"),
        (["--mode", "multi", "--layer", "fc1", "--intervention_size", "2"], "2 subspaces of 2 dimensions do not fit the fc1 site"),
        (["--layer", "conv4"], "invalid choice"),
        (["--intervention_size", "0"], "positive integer"),
        (["--model_path", "does/not/exist"], "train it first"),
    ],
)
def test_ellipse_das_bad_input_is_one_line(trained_cnn, tmp_path, args, message):
    out = tmp_path / "das"
    model_args = [] if "--model_path" in args else ["--model_path", trained_cnn]
    proc = run(DAS, "--quick", *model_args, "--results_path", out, *args, check=False)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert files_under(out) == {}


def test_ellipse_das_refuses_a_model_of_another_kind(tmp_path):
    from causal_das.models import mlp
    from causal_das.models.mlp import MLPClassifier

    mlp.save(MLPClassifier(16), tmp_path / "mlp")
    proc = run(DAS, "--quick", "--model_path", tmp_path / "mlp", "--results_path", tmp_path / "das", check=False)
    assert proc.returncode == 2 and "holds no ellipse CNN" in proc.stderr and "Traceback" not in proc.stderr
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "cnn.json").write_text('{"kind": "ellipse_cnn"}')
    (tmp_path / "bad" / "model.safetensors").write_bytes(b"not a safetensors file")
    proc = run(DAS, "--quick", "--model_path", tmp_path / "bad", "--results_path", tmp_path / "das", check=False)
    assert proc.returncode == 2 and "missing or corrupt" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "das").exists()
