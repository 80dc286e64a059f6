"""Typed config: defaults valid, TOML then --set overrides, unknown keys and wrong types rejected with valid keys."""
from __future__ import annotations

import pytest

from empirics.runs.config import Config, field_names, load_config
from infra.errors import BadInput


def test_defaults_are_the_papers_mnist_mlp_recipe():
    """Defaults: MNIST MLP 64-32-16, dropout 0.05, k = 4, Adam 1e-3, weight decay 1e-4, 75 epochs, patience 10."""
    config = Config()
    assert (config.dataset, config.arch, config.widths, config.dropout, config.members) == \
        ("mnist", "mlp", (64, 32, 16), 0.05, 4)
    assert (config.optimizer, config.lr, config.weight_decay, config.epochs, config.patience) == \
        ("adam", 1e-3, 1e-4, 75, 10)
    assert (config.init, config.init_std, config.num_workers, config.device) == ("normal", 0.5, 0, "cpu")


def test_toml_then_overrides_in_order(tmp_path):
    """The file sets values, --set overrides them; several key=value after one --set are all applied."""
    path = tmp_path / "run.toml"
    path.write_text('arch = "resnet18"\nwidth_mult = 0.25\nrank = "full"\nmilestones = [3, 6]\nlr = 1\n')
    config = load_config(path, ["width_mult=0.5", "widths=8,4", "nesterov=true", "rank=2", "shift_families=fog,rotate"])
    assert (config.arch, config.width_mult, config.widths, config.nesterov, config.rank) == \
        ("resnet18", 0.5, (8, 4), True, 2)
    assert config.milestones == (3, 6) and config.lr == 1.0 and isinstance(config.lr, float)
    assert config.shift_families == ("fog", "rotate")
    assert load_config(path).rank == "full"


def test_a_config_table_in_toml_is_accepted(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[config]\nmethod = "deep-ensemble"\n')
    assert load_config(path).method == "deep-ensemble"


def test_round_trip_through_to_dict():
    """to_dict() (JSON-ready lists) → from_dict() gives the same config."""
    config = load_config(None, ["rank=full", "widths=5,6"])
    assert Config.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("assignment,message", [
    ("colour=red", "unknown config key 'colour': valid keys are dataset, ood_dataset"),
    ("lr=fast", "lr='fast' has the wrong type: expected a number"),
    ("epochs=2.5", "epochs='2.5' has the wrong type: expected an integer"),
    ("nesterov=maybe", "nesterov='maybe' has the wrong type: expected true or false"),
    ("rank=half", "rank='half' has the wrong type: expected an integer"),
    ("method=bayes", "method='bayes' is unknown: expected one of 'single', 'batchensemble'"),
    ("members=0", r"members=0 is out of range: expected a value in \[1"),
    ("n_eval=-1", r"n_eval=-1 is out of range: expected a value in \[0, ∞\)"),
    ("rank=0", r"rank=0 is out of range"),
    ("dropout=1", r"dropout=1.0 is out of range: expected a value in \[0, 1\)"),
    ("shift_severity=9", "shift_severity=9 is out of range: expected one of 1, 2, 3, 4, 5"),
    ("shift_families=fog,snow", "shift_families contains 'snow'"),
    ("milestones=5,2", "milestones=.5, 2. is not valid: expected increasing epochs"),
    ("lr", "--set 'lr' is not key=value"),
])
def test_bad_overrides_are_one_line_errors_naming_the_value(assignment, message):
    with pytest.raises(BadInput, match=message):
        load_config(None, [assignment])


def test_unknown_key_message_lists_every_valid_key():
    with pytest.raises(BadInput) as error:
        Config.from_dict({"colour": "red"})
    assert all(name in str(error.value) for name in field_names())


def test_ill_typed_toml_value_is_rejected(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('epochs = "ten"\n')
    with pytest.raises(BadInput, match="epochs='ten' has the wrong type"):
        load_config(path)
    path.write_text("epochs = \n")
    with pytest.raises(BadInput, match="is not valid TOML"):
        load_config(path)
    with pytest.raises(BadInput, match="does not exist"):
        load_config(tmp_path / "missing.toml")


def test_cross_field_rules():
    """MC Dropout needs dropout > 0; early stopping needs a validation set."""
    with pytest.raises(BadInput, match="method=mc-dropout"):
        load_config(None, ["method=mc-dropout", "dropout=0"])
    with pytest.raises(BadInput, match="patience > 0 needs a validation set"):
        load_config(None, ["val_fraction=0"])
    assert load_config(None, ["val_fraction=0", "patience=0"]).val_fraction == 0.0


def test_top_level_keys_beside_a_config_table_are_refused_not_ignored(tmp_path):
    """Defect 7: a file with top-level keys *and* a [config] table used to ignore the top-level ones silently (a
    typo'd key and ``seed = 5`` alike); now it is a one-line error naming them."""
    path = tmp_path / "run.toml"
    path.write_text('seed = 5\nlearning_rate = 0.1\n[config]\nmethod = "deep-ensemble"\n')
    with pytest.raises(BadInput, match="has a .config. table and also learning_rate, seed outside it"):
        load_config(path)


def test_an_unknown_table_is_refused_with_the_valid_keys(tmp_path):
    """Defect 7: an unknown table (here [optimiser]) is an unknown key, not silently ignored."""
    path = tmp_path / "run.toml"
    path.write_text('method = "single"\n[optimiser]\nlr = 0.1\n')
    with pytest.raises(BadInput, match="unknown config key.s. optimiser: valid keys are dataset"):
        load_config(path)


def test_a_base_config_is_the_starting_point_of_file_and_overrides(tmp_path):
    """``load_config(base=...)`` (how ``train --resume`` starts from a run's config.json): keys not set keep the
    base's values, not the defaults."""
    base = Config.from_dict({"n_train": 64, "epochs": 3})
    config = load_config(None, ["threads=1"], base=base)
    assert (config.n_train, config.epochs, config.threads) == (64, 3, 1)
