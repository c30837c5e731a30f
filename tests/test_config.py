"""Config validation: every rejection names its key; overrides are typed and validated too."""

import pytest
import yaml

from charrnn_cli.io.config import ConfigError, apply_overrides, describe, from_dict, load_config

from charrnn_cli.io.targets import config_for

from conftest import make_config


def test_defaults_and_types():
    cfg = from_dict({"model": {"type": "gru", "hidden_size": 32}, "training": {"learning_rate": 1}})
    assert cfg.model.type == "gru" and cfg.model.hidden_size == 32 and cfg.model.num_layers == 2
    assert isinstance(cfg.training.learning_rate, float) and cfg.training.learning_rate == 1.0
    assert cfg.data.val_fraction == 0.1 and cfg.training.optimizer == "adam"


@pytest.mark.parametrize("raw,message", [
    ({"modle": {}}, "unknown section 'modle' (did you mean 'model'?)"),
    ({"training": {"learnig_rate": 0.1}}, "unknown key training.learnig_rate (did you mean 'learning_rate'?)"),
    ({"training": {"zzz": 1}}, "unknown key training.zzz"),
    ({"model": {"hidden_size": "big"}}, "model.hidden_size: expected an integer, got 'big'"),
    ({"model": {"hidden_size": 1.5}}, "model.hidden_size: expected an integer"),
    ({"model": {"hidden_size": True}}, "model.hidden_size: expected an integer"),
    ({"model": {"hidden_size": 0}}, "model.hidden_size: must be > 0"),
    ({"model": {"num_layers": -1}}, "model.num_layers: must be > 0"),
    ({"model": {"type": "transformer"}}, "model.type: must be one of rnn, lstm, gru"),
    ({"model": {"dropout": 1.0}}, "model.dropout: must be in [0, 1)"),
    ({"model": {"init": "zeros"}}, "model.init: must be one of"),
    ({"data": {"val_fraction": 1.5}}, "data.val_fraction: must be in [0, 1)"),
    ({"data": {"path": 3}}, "data.path: expected a string"),
    ({"training": {"optimizer": "lbfgs"}}, "training.optimizer: must be one of adam, rmsprop, adagrad, sgd"),
    ({"training": {"learning_rate": -0.1}}, "training.learning_rate: must be > 0"),
    ({"training": {"learning_rate": "fast"}}, "training.learning_rate: expected a number"),
    ({"training": {"batch_size": 0}}, "training.batch_size: must be > 0"),
    ({"training": {"grad_clip": -1}}, "training.grad_clip: must be >= 0"),
    ({"training": {"clip_mode": "both"}}, "training.clip_mode: must be one of norm, value"),
    ({"training": {"lr_decay": 1.5}}, "training.lr_decay: must be in (0, 1]"),
    ({"training": {"max_minutes": 0}}, "training.max_minutes: must be > 0"),
    ({"training": {"lr_schedule": "cosine", "max_minutes": None}}, "training.lr_decay_steps: the cosine schedule needs"),
    ({"training": [1, 2]}, "training: expected a mapping"),
    ([1, 2], "the config must be a mapping"),
])
def test_rejections_name_the_key(raw, message):
    with pytest.raises(ConfigError) as e:
        from_dict(raw)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_nullable_keys_accept_null():
    cfg = from_dict({"training": {"max_steps": None, "max_minutes": 2}})
    assert cfg.training.max_steps is None and cfg.training.max_minutes == 2.0


def test_overrides_are_yaml_typed_and_validated():
    raw = apply_overrides({"training": {"seed": 1}}, ["training.seed=7", "model.type=gru", "training.max_steps=null"])
    assert raw == {"training": {"seed": 7, "max_steps": None}, "model": {"type": "gru"}}
    with pytest.raises(ConfigError, match="training.batch_size: expected an integer"):
        from_dict(apply_overrides({}, ["training.batch_size=abc"]))
    with pytest.raises(ConfigError, match="section.key=value"):
        apply_overrides({}, ["training.seed"])
    with pytest.raises(ConfigError, match="must look like section.key"):
        apply_overrides({}, ["seed=3"])
    with pytest.raises(ConfigError, match="did you mean 'training'"):
        apply_overrides({}, ["trainig.seed=3"])


def test_load_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {type: lstm\ntraining: [")
    with pytest.raises(ConfigError, match=r"invalid YAML in .*bad.yaml at line"):
        load_config(bad)
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump({"model": {"type": "rnn"}}))
    cfg = load_config(good, ["model.hidden_size=16"])
    assert cfg.model.type == "rnn" and cfg.model.hidden_size == 16
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_config(empty).model.type == "lstm"


def test_describe_lists_every_key():
    keys = [r[0] for r in describe()]
    assert "training.learning_rate" in keys and "model.forget_bias" in keys and "output.dir" in keys
    assert all(r[3] for r in describe())  # every key has a help text


def test_bundled_configs_validate():
    import glob
    import os

    root = os.path.dirname(os.path.dirname(__file__))
    paths = glob.glob(os.path.join(root, "configs", "*.yaml"))
    assert paths
    for p in paths:
        load_config(p)


def test_readme_documents_every_key():
    import os

    from charrnn_cli.io.config import reference_table

    readme = open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "README.md"), encoding="utf-8").read()
    for key, _, _, _ in describe():
        assert f"| `{key}` |" in readme, key
    assert reference_table() in readme  # the table is generated: regenerate it with reference_table()


def test_ci_installs_exactly_as_the_readme_says():
    import os
    import re

    root = os.path.dirname(os.path.dirname(__file__))
    readme = open(os.path.join(root, "README.md"), encoding="utf-8").read()
    ci = open(os.path.join(root, ".ci", "run"), encoding="utf-8").read()
    test_cmd = [line for line in readme.splitlines() if line.strip().endswith("&& pytest")]
    assert len(test_cmd) == 1
    for step in test_cmd[0].split("&&"):
        step = step.strip()
        assert re.search(r"^" + re.escape(step) + r"$", ci, flags=re.M), step


def test_a_checkpoints_config_is_read_without_numpy(tmp_path):
    """`charrnn train --resume` plans threads from the stored config before NumPy loads: the
    standard-library reader gives what np.load gives, and loads no NumPy."""
    import json
    import subprocess
    import sys

    import numpy as np

    from charrnn_cli.io.targets import stored_config
    from charrnn_cli.training.loop import train

    train(from_dict(make_config(tmp_path, max_steps=1)), quiet=True)
    path = str(tmp_path / "run" / "latest.npz")
    with np.load(path) as z:
        assert stored_config(path) == json.loads(str(z["config_json"]))
    code = ("import sys, json; from charrnn_cli.io.targets import stored_config\n"
            "print(json.dumps(stored_config(sys.argv[1])), 'numpy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True, check=True).stdout
    assert out.split()[-1] == "False"
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ConfigError, match="not a charrnn checkpoint .it has no config_json"):
        stored_config(str(tmp_path / "other.npz"))
    np.savez(tmp_path / "wrong.npz", config_json=np.zeros(3))
    with pytest.raises(ConfigError, match="should be a single string"):
        stored_config(str(tmp_path / "wrong.npz"))
    with np.load(path) as z:
        arrays = dict(z)
    stored = json.loads(str(arrays["config_json"]))
    stored["model"]["hidden_size"] = -3
    arrays["config_json"] = np.array(json.dumps(stored))
    np.savez(tmp_path / "invalid.npz", **arrays)
    with pytest.raises(ConfigError, match=r"invalid.npz: the stored config is invalid: model.hidden_size"):
        config_for(None, (), str(tmp_path / "invalid.npz"))
    with pytest.raises(ConfigError, match=r"^training.max_steps"):  # a bad --set is the --set's fault
        config_for(None, ("training.max_steps=-1",), path)
