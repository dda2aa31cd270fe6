import copy

import pytest
import yaml

from conftest import REPO
from gendiag.config import ConfigError, validate_config

SCHEMA = REPO / "workflow/schemas/config.schema.yaml"
SHIPPED = [REPO / "config/config.yaml", REPO / "tests/config/tiny.yaml"]


def load(path=REPO / "config/config.yaml"):
    return yaml.safe_load(path.read_text())


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    validate_config(load(path), SCHEMA)


def test_defaults_are_filled_in():
    config = validate_config(load(), SCHEMA)
    assert config["training"]["grad_clip"] == 1.0
    assert config["models"]["llama"]["shape"]["max_position_embeddings"] == 512


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c.update(trainig={}), r"unknown key\(s\) \['trainig'\] at the top level; allowed keys: \["),
        (lambda c: c["models"]["llama"]["lora"].update(r=0), r"`models.llama.lora.r`: 0 is less than the minimum"),
        (lambda c: c["training"].update(lr="fast"), r"`training.lr`: expected number, got str 'fast'"),
        (lambda c: c["models"]["llama"].update(family="gpt2"), r"`models.llama.family`: 'gpt2' is not allowed; choose"),
        (lambda c: c["recipes"]["specialist"].update(corpora=["enron"]), r"unknown corpus 'enron'; defined"),
        (lambda c: c["corpora"]["corporate"].pop("style"), r"`corpora.corporate`: 'style' is a required property"),
        (lambda c: c["models"]["llama"]["lora"].update(target_modules=["qproj"]), r"'qproj' is not allowed"),
        (lambda c: c["training"]["cot"].update(rationales="teacher"),
         r"`training.cot.teacher`: set either `model` \(a `models:` entry\) or `id`"),
        (lambda c: c["training"]["cot"].update(rationales="teacher", teacher={"model": "gpt4"}),
         r"`training.cot.teacher.model`: unknown model 'gpt4'; defined: \['gemma2', 'llama', 'mistral'\]"),
        (lambda c: c["training"]["cot"].update(rationales="teacher", teacher={"id": "/models/instruct"}),
         r"`training.cot.teacher`: `id` needs `family`"),
        (lambda c: c["training"]["cot"].update(rationales="teacher", teacher={"model": "llama", "instruction": "Why?"}),
         r"`training.cot.teacher.instruction`: 'Why\?' does not match"),
        (lambda c: c["models"].update(classical=c["models"]["llama"]),
         r"`models.classical`: the name is the classical baseline's"),
        (lambda c: c["classical"].update(char_ngrams=[5, 3]), r"`classical.char_ngrams`: \[5, 3\] is not a range"),
        (lambda c: c["classical"].update(C=0), r"`classical.C`: 0 is less than or equal to the minimum"),
        (lambda c: c["classical"].update(class_weight="auto"), r"`classical.class_weight`: 'auto' is not allowed"),
        (lambda c: c["corpora"]["corporate"].update(evaluation_only=True),
         r"`recipes.specialist.corpora`: 'corporate' is evaluation-only .* no recipe may train on it"),
        (lambda c: (c["corpora"]["advance_fee"].update(evaluation_only=True),
                    c["recipes"]["generalist"].update(corpora=["corporate", "mailing_list"]),
                    c["evaluation"].update(testsets=["corporate", "mailing_list"])),
         r"`evaluation.testsets`: evaluation-only corpora \['advance_fee'\] are not in it"),
    ],
)
def test_bad_config_names_the_key_and_what_is_allowed(edit, message):
    config = copy.deepcopy(load())
    edit(config)
    with pytest.raises(ConfigError, match=message):
        validate_config(config, SCHEMA)


def test_hub_model_must_pin_a_revision():
    config = load()
    config["models"]["llama"] = {"family": "llama", "source": "hub", "id": "meta-llama/Llama-3.1-8B"}
    with pytest.raises(ConfigError, match="pin a hub revision"):
        validate_config(config, SCHEMA)


def test_command_line_strings_are_coerced_to_the_schema_types():
    """`snakemake --config 'training={"steps": 5}'` delivers nested values as strings."""
    config = load()
    config["training"] = {"steps": "5", "lr": "1e-3", "gradient_checkpointing": "true"}
    config["evaluation"] = {"max_test_size": "null"}
    validate_config(config, SCHEMA)
    assert config["training"]["steps"] == 5 and config["training"]["lr"] == 1e-3
    assert config["training"]["gradient_checkpointing"] is True and config["evaluation"]["max_test_size"] is None
    config["training"]["steps"] = "five"
    with pytest.raises(ConfigError, match="`training.steps`: expected integer, got str 'five'"):
        validate_config(config, SCHEMA)


def test_the_classical_baseline_settings_are_the_librarys_and_its_run_keys_agree():
    from gendiag import config as config_module
    from gendiag.evaluate import classical

    config = validate_config(load(), SCHEMA)
    settings = {k: v for k, v in config["classical"].items() if k != "enabled"}
    assert classical.TfidfSettings.from_mapping(settings) == classical.TfidfSettings(C_grid=())  # the defaults
    assert (config_module.CLASSICAL_ARCH, config_module.CLASSICAL_PARADIGM) == (classical.ARCH, classical.PARADIGM)
    config = validate_config({k: v for k, v in load().items() if k != "classical"}, SCHEMA)
    assert config["classical"]["enabled"] is True  # the baseline is on unless switched off


def with_loco(**family):
    config = copy.deepcopy(load())
    config["recipes"]["loco"] = {"leave_one_out": True, "train_size": 300, "val_size": 60, **family}
    return config


def test_a_leave_one_out_family_becomes_one_recipe_per_held_out_corpus():
    """Each recipe trains on every corpus but one, with the family's settings; the held-out corpus is
    out of domain for it and only for it; evaluation-only corpora never enter."""
    from gendiag.config import in_domain

    config = with_loco()
    config["corpora"]["advance_fee"]["evaluation_only"] = True
    config["recipes"]["generalist"]["corpora"].remove("advance_fee")
    config["training"]["paradigm_scope"]["cot"]["recipes"] = ["specialist", "loco"]
    validate_config(config, SCHEMA)
    training = ["corporate", "mailing_list", "credential_phish"]
    assert list(config["recipes"]) == ["specialist", "generalist"] + [f"loco_{c}" for c in training]
    for held_out in training:
        recipe = config["recipes"][f"loco_{held_out}"]
        assert recipe == {"corpora": [c for c in training if c != held_out], "train_size": 300, "val_size": 60,
                          "seed": 0}
    domains = in_domain(config["recipes"], list(config["corpora"]))
    for held_out in training:
        assert domains[f"loco_{held_out}"] == [c for c in training if c != held_out]
    # A family named in a paradigm's scope stands for all its recipes.
    assert config["training"]["paradigm_scope"]["cot"]["recipes"] == ["specialist"] + [f"loco_{c}" for c in training]
    expanded = copy.deepcopy(config)
    assert validate_config(expanded, SCHEMA) == config  # validating the expanded config changes nothing


def test_a_leave_one_out_family_over_a_listed_subset_and_an_ordinary_recipe_with_the_flag_off():
    config = with_loco(corpora=["corporate", "advance_fee"], seed=3)
    config["recipes"]["specialist"]["leave_one_out"] = False
    validate_config(config, SCHEMA)
    assert config["recipes"]["loco_corporate"]["corpora"] == ["advance_fee"]
    assert config["recipes"]["loco_advance_fee"] == {"corpora": ["corporate"], "train_size": 300, "val_size": 60,
                                                     "seed": 3}
    assert config["recipes"]["specialist"] == {"corpora": ["corporate"], "train_size": 360, "val_size": 80, "seed": 0}


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c["recipes"]["loco"].update(corpora=["corporate", "enron"]),
         r"`recipes.loco.corpora`: unknown corpus \['enron'\]; defined"),
        (lambda c: c["recipes"]["loco"].update(corpora=["corporate"]),
         r"`recipes.loco`: leaving one corpus out needs at least two corpora; the family lists \['corporate'\]"),
        (lambda c: (c["corpora"]["advance_fee"].update(evaluation_only=True),
                    c["recipes"]["generalist"]["corpora"].remove("advance_fee"),
                    c["recipes"]["loco"].update(corpora=["corporate", "advance_fee"])),
         r"`recipes.loco.corpora`: \['advance_fee'\] are evaluation-only .* never enter a leave-one-out recipe"),
        (lambda c: c["recipes"].update(loco_corporate={"corpora": ["corporate"]}),
         r"`recipes`: 'loco_corporate' comes from both the leave-one-out family `recipes.loco` and "
         r"`recipes.loco_corporate`; rename one"),
        (lambda c: c["evaluation"].update(testsets=["corporate", "mailing_list"]),
         r"`recipes.loco`: held-out corpora \['credential_phish', 'advance_fee'\] are not evaluated test sets"),
        (lambda c: c["recipes"]["loco"].update(leave_one_out=False),
         r"`recipes.loco`: 'corpora' is a required property"),
        (lambda c: c["report"].update(generalist="loco"), r"`report.generalist`: unknown recipe 'loco'; defined: "),
    ],
)
def test_a_bad_leave_one_out_family_names_the_key_and_the_fix(edit, message):
    config = with_loco()
    config.setdefault("report", {})
    edit(config)
    with pytest.raises(ConfigError, match=message):
        validate_config(config, SCHEMA)
