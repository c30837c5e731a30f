"""The Python API gives what the commands give: the same text for a seed, eval's nats, the same items."""

import json

import pytest

import charrnn_cli as charrnn
from charrnn_cli.io.checkpoint import CheckpointError

from conftest import make_config, write_yaml, NAMES, names_config, invoke


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("api")
    result = charrnn.train(write_yaml(tmp, make_config(tmp)), overrides={"training.max_steps": 12,
                                                                        "training.learning_rate": 2e-2})
    return tmp, result


def test_train_applies_overrides_and_returns_the_result(run):
    tmp, result = run
    assert result.progress.step == 12 and result.stop_reason == "max_steps" and result.model is not None
    assert charrnn.load(tmp / "run" / "latest.npz").config.training.learning_rate == 0.02


def test_train_resume_alone_goes_on_with_the_runs_config(tmp_path):
    raw = make_config(tmp_path, max_steps=4)
    charrnn.train(write_yaml(tmp_path, raw), overrides={"model.hidden_size": 10})
    result = charrnn.train(resume=tmp_path / "run", overrides={"training.max_steps": 6})  # a run folder
    assert result.progress.step == 6 and result.model.hidden_size == 10
    with pytest.raises(ValueError, match="resume=CHECKPOINT"):
        charrnn.train()


def test_sample_and_stream_are_the_commands_text(run):
    tmp, _ = run
    model = charrnn.load(tmp / "run" / "best.npz")
    cli = invoke("sample", tmp / "run" / "best.npz", "--seed", "the ", "--length", 80, "--rng-seed", 5,
                 "--temperature", 0.8, "--top-p", 0.9).output
    text = model.sample("the ", length=80, temperature=0.8, top_p=0.9, rng_seed=5)
    assert cli == text + "\n"
    assert "the " + "".join(model.stream("the ", length=80, temperature=0.8, top_p=0.9, rng_seed=5)) == text
    with pytest.raises(ValueError, match="not in the vocabulary"):
        model.sample("ЖЖ")
    with pytest.raises(ValueError, match="temperature"):
        model.sample(temperature=0)


def test_score_is_evals_figure(run):
    tmp, _ = run
    text = (tmp / "text.txt").read_text(encoding="utf-8")[:900]
    (tmp / "piece.txt").write_text(text, encoding="utf-8")
    ev = json.loads(invoke("eval", tmp / "run" / "best.npz", tmp / "piece.txt", "--json").output)
    assert charrnn.load(tmp / "run" / "best.npz").score(text) == pytest.approx(ev["nats_per_char"], rel=1e-12)


def test_items_are_the_commands_items(tmp_path):
    raw = names_config(tmp_path, max_steps=60)
    charrnn.train(write_yaml(tmp_path, raw))
    best = tmp_path / "run" / "best.npz"
    model = charrnn.load(best)
    cli = invoke("sample", best, "--items", 8, "--rng-seed", 3).stdout.split("\n")[:-1]
    assert model.items(8, rng_seed=3) == cli
    assert not set(model.items(10, novel=True, rng_seed=4)) & set(NAMES)
    ev = json.loads(invoke("eval", best, raw["data"]["path"], "--json").output)  # items scored as eval does
    text = open(raw["data"]["path"], encoding="utf-8").read()
    assert model.score(text) == pytest.approx(ev["nats_per_char"], rel=1e-12)


def test_bad_checkpoint_raises_the_commands_message(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        charrnn.load(tmp_path / "none.npz")


def test_importing_the_package_does_not_load_numpy():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", "import sys, charrnn_cli, charrnn_cli.cli; print('numpy' in sys.modules)"],
                         capture_output=True, text=True)
    assert out.stdout.strip() == "False", out
