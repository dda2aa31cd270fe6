"""Config validation: JSON Schema (with defaults filled in) plus the cross-references a schema
cannot express. Runs before any job; every error names the key and what is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import yaml

# The classical baseline's run keys (`gendiag.evaluate.classical.ARCH` and `PARADIGM`), here so that
# the workflow reads them without importing scikit-learn; its seed is fixed (the fit is deterministic).
CLASSICAL_ARCH = "classical"
CLASSICAL_PARADIGM = "tfidf"
CLASSICAL_SEED = 0


class ConfigError(ValueError):
    """The workflow config is invalid; the message lists every problem with its key."""


def _with_defaults(validator_class):
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = _copy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def _copy(value: Any) -> Any:
    return yaml.safe_load(yaml.safe_dump(value))


def _describe(error: jsonschema.ValidationError) -> str:
    key = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    schema = error.schema if isinstance(error.schema, dict) else {}
    if f"x-message-{error.validator}" in schema:
        return f"`{key}`: {schema[f'x-message-{error.validator}']}"
    if error.validator == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        where = key if key != "(top level)" else "the top level"
        return f"unknown key(s) {extra} at {where}; allowed keys: {allowed}"
    if error.validator == "enum":
        return f"`{key}`: {error.instance!r} is not allowed; choose one of {error.validator_value}"
    if error.validator in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        return f"`{key}`: {error.message} (allowed range: {_range(schema)})"
    if error.validator == "type":
        return f"`{key}`: expected {error.validator_value}, got {type(error.instance).__name__} {error.instance!r}"
    if error.validator == "required":
        return f"`{key}`: {error.message}"
    return f"`{key}`: {error.message}"


def _range(schema: dict) -> str:
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema.get("maximum", schema.get("exclusiveMaximum"))
    left = "(" if "exclusiveMinimum" in schema else "["
    right = ")" if "exclusiveMaximum" in schema else "]"
    return f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"


def validate_config(config: dict, schema_path: str | Path) -> dict:
    """Validate `config` in place (defaults filled in) and return it; raise ConfigError on problems."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = _with_defaults(jsonschema.Draft202012Validator)(schema)
    _coerce_cli_strings(validator, config)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    problems = list(dict.fromkeys(_describe(e) for e in errors))
    if not problems:
        problems = expand_leave_one_out(config)
    if not problems:
        problems = _cross_references(config)
    if problems:
        raise ConfigError("invalid config:\n  - " + "\n  - ".join(problems) + f"\n(schema: {schema_path})")
    return config


def _coerce_cli_strings(validator, config: dict) -> None:
    """Turn strings into the numbers/booleans the schema expects.

    `snakemake --config 'training={"steps": 5}'` parses nested values with YAML's BaseLoader, so
    they arrive as strings; a value that does not parse is left for the validator to report.
    """
    for _ in range(100):  # each pass fixes at least one value, and fixed values stay fixed
        changed = False
        for error in validator.iter_errors(config):
            if error.validator != "type" or not isinstance(error.instance, str) or not error.absolute_path:
                continue
            expected = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
            value = _parse_scalar(error.instance, expected)
            if value is not _UNPARSED:
                *parents, last = error.absolute_path
                target = config
                for key in parents:
                    target = target[key]
                target[last] = value
                changed = True
        if not changed:
            return


_UNPARSED = object()


def _parse_scalar(text: str, expected: list[str]):
    lowered = text.strip().lower()
    if "boolean" in expected and lowered in ("true", "false"):
        return lowered == "true"
    if "null" in expected and lowered in ("null", "none", "~"):
        return None
    try:
        if "integer" in expected and float(text) == int(float(text)):
            return int(float(text))
        if "number" in expected:
            return float(text)
    except ValueError:
        return _UNPARSED
    return _UNPARSED


def expand_leave_one_out(config: dict) -> list[str]:
    """Replace each leave-one-corpus-out family in `recipes` by its recipes, in place; return the problems.

    An entry `<name>: {leave_one_out: true, corpora: [a, b, c], ...}` becomes the recipes `<name>_a`
    (corpora [b, c]), `<name>_b` and `<name>_c`, each with the entry's other settings, where the family
    stood; without `corpora`, the family runs over every corpus that is not evaluation-only. A recipe's
    in-domain test sets are its corpora, so the held-out corpus is out of domain for its recipe. A family
    named in `training.paradigm_scope.<paradigm>.recipes` stands for all its recipes. An expanded recipe
    is an ordinary one (the same params as if written out), so the expansion can run twice.
    """
    all_corpora = config["corpora"]
    evaluation_only = [c for c, spec in all_corpora.items() if spec.get("evaluation_only")]
    evaluated = (config.get("evaluation") or {}).get("testsets") or list(all_corpora)
    problems: list[str] = []
    recipes: dict[str, dict] = {}
    origin: dict[str, str] = {}  # recipe name -> where it came from, for name clashes
    families: dict[str, list[str]] = {}
    for name, recipe in config["recipes"].items():
        if not recipe.get("leave_one_out"):
            recipe.pop("leave_one_out", None)  # `false`: an ordinary recipe, with the same params as without it
            expanded = {name: recipe}
            source = f"`recipes.{name}`"
        else:
            key = f"recipes.{name}"
            listed = "corpora" in recipe
            corpora = list(recipe["corpora"]) if listed else [c for c in all_corpora if c not in evaluation_only]
            unknown = [c for c in corpora if c not in all_corpora]
            excluded = [c for c in corpora if c in evaluation_only]
            unevaluated = [c for c in corpora if c in all_corpora and c not in evaluated]
            if unknown:
                problems.append(f"`{key}.corpora`: unknown corpus {unknown}; defined: {sorted(all_corpora)}")
                continue
            if excluded:
                problems.append(f"`{key}.corpora`: {excluded} are evaluation-only (`corpora.<name>.evaluation_only: "
                                "true`) and never enter a leave-one-out recipe; remove them from the list (an "
                                "evaluation-only corpus is unseen by every recipe already)")
                continue
            if len(corpora) < 2:
                where = "lists" if listed else "has (every corpus that is not evaluation-only)"
                problems.append(f"`{key}`: leaving one corpus out needs at least two corpora; the family {where} "
                                f"{corpora}")
                continue
            if unevaluated:
                problems.append(f"`{key}`: held-out corpora {unevaluated} are not evaluated test sets "
                                f"(`evaluation.testsets`: {evaluated}), so no table would show them unseen; add them "
                                "to `evaluation.testsets`, or list the family's `corpora` without them")
                continue
            settings = {k: v for k, v in recipe.items() if k not in ("leave_one_out", "corpora")}
            expanded = {f"{name}_{held_out}": {"corpora": [c for c in corpora if c != held_out], **_copy(settings)}
                        for held_out in corpora}
            families[name] = list(expanded)
            source = f"the leave-one-out family `recipes.{name}`"
        for recipe_name, spec in expanded.items():
            if recipe_name in recipes:
                problems.append(f"`recipes`: '{recipe_name}' comes from both {origin[recipe_name]} and {source}; "
                                "rename one of them")
                continue
            if recipe_name == "none":
                problems.append(f"`recipes`: {source} makes the reserved name 'none'; rename it")
                continue
            recipes[recipe_name], origin[recipe_name] = spec, source
    if problems:
        return problems
    config["recipes"] = recipes
    for scope in (config.get("training") or {}).get("paradigm_scope", {}).values():
        if scope.get("recipes"):
            scope["recipes"] = list(dict.fromkeys(r for n in scope["recipes"] for r in families.get(n, [n])))
    return []


def in_domain(recipes: dict, testsets: list[str]) -> dict[str, list[str]]:
    """{recipe: [test sets whose corpus it trains on]}: a leave-one-out recipe's held-out corpus is out of domain."""
    return {recipe: [t for t in testsets if t in spec["corpora"]] for recipe, spec in recipes.items()}


def _cross_references(config: dict) -> list[str]:
    problems = []
    corpora = set(config["corpora"])
    synthetic_keys = {"style", "n_messages", "malicious_share", "label_noise", "seed"}
    for name, corpus in config["corpora"].items():
        if corpus.get("loader") != "synthetic" and synthetic_keys & set(corpus):
            misplaced = sorted(synthetic_keys & set(corpus))
            problems.append(f"`corpora.{name}`: {misplaced} only apply to `loader: synthetic`")
    problems += _source_references(config["corpora"])
    evaluation_only = sorted(name for name, corpus in config["corpora"].items() if corpus.get("evaluation_only"))
    for name, recipe in config["recipes"].items():
        for corpus in recipe["corpora"]:
            if corpus not in corpora:
                problems.append(f"`recipes.{name}.corpora`: unknown corpus '{corpus}'; defined: {sorted(corpora)}")
            elif corpus in evaluation_only:
                problems.append(f"`recipes.{name}.corpora`: '{corpus}' is evaluation-only (`corpora.{corpus}."
                                "evaluation_only: true`), so no recipe may train on it; remove it from the recipe or "
                                "drop evaluation_only")
    if len(evaluation_only) == len(corpora):
        problems.append("`corpora`: every corpus is evaluation-only; the recipes need at least one corpus to train on")
    for corpus in config["evaluation"].get("testsets") or []:
        if corpus not in corpora:
            problems.append(f"`evaluation.testsets`: unknown corpus '{corpus}'; defined: {sorted(corpora)}")
    if config["evaluation"].get("testsets"):
        unevaluated = [c for c in evaluation_only if c not in config["evaluation"]["testsets"]]
        if unevaluated:
            problems.append(f"`evaluation.testsets`: evaluation-only corpora {unevaluated} are not in it; an "
                            "evaluation-only corpus exists to be a test set: add it, or remove it from `corpora`")
    evaluated = config["evaluation"].get("testsets") or sorted(corpora)
    for block in ("shap", "circuits"):
        for testset in config.get(block, {}).get("testsets") or []:
            if testset not in evaluated:
                problems.append(f"`{block}.testsets`: '{testset}' is not an evaluated test set; evaluated: {evaluated}")
    classical = config.get("classical", {})
    if classical.get("enabled") and CLASSICAL_ARCH in config["models"]:
        problems.append(f"`models.{CLASSICAL_ARCH}`: the name is the classical baseline's (`classical`); rename the "
                        "model, or set `classical.enabled: false`")
    for key in ("word_ngrams", "char_ngrams"):
        low, high = classical.get(key, (1, 1))
        if low > high:
            problems.append(f"`classical.{key}`: [{low}, {high}] is not a range; give [min_n, max_n] with "
                            "min_n <= max_n")
    for name, model in config["models"].items():
        if model["source"] == "hub" and not model.get("id"):
            problems.append(f"`models.{name}`: source 'hub' needs `id` (a hub id or a local model directory)")
        if model["source"] == "gguf" and not model.get("gguf"):
            problems.append(f"`models.{name}`: source 'gguf' needs `gguf` (its `files` and `sha256`)")
        if model["source"] != "gguf" and model.get("gguf"):
            problems.append(f"`models.{name}.gguf`: only a model with source 'gguf' reads it"
                            f" (source is {model['source']!r})")
        if model["source"] == "tiny" and not model.get("shape"):
            problems.append(f"`models.{name}`: source 'tiny' needs `shape`")
        if model["source"] == "hub" and "/" in str(model.get("id", "")) and not Path(model["id"]).exists() \
                and not model.get("revision"):
            problems.append(f"`models.{name}.revision`: pin a hub revision (commit hash) for reproducibility")
    problems += _teacher_references(config)
    for key in ("specialist", "generalist"):
        name = config["report"].get(key)
        if name and name not in config["recipes"]:
            problems.append(f"`report.{key}`: unknown recipe '{name}'; defined: {sorted(config['recipes'])}")
    return problems


def _teacher_references(config: dict) -> list[str]:
    """A teacher is a `models:` entry or a hub id/local directory with its family, not both."""
    cot = config["training"]["cot"]
    if cot["rationales"] != "teacher" or "cot" not in config["training"]["paradigms"]:
        return []
    teacher, key = cot["teacher"], "training.cot.teacher"
    if bool(teacher.get("model")) == bool(teacher.get("id")):
        return [f"`{key}`: set either `model` (a `models:` entry) or `id` (a hub id or local model directory)"]
    if teacher.get("model") and teacher["model"] not in config["models"]:
        return [f"`{key}.model`: unknown model '{teacher['model']}'; defined: {sorted(config['models'])}"
                " (or give the teacher's `id` and `family` instead)"]
    if teacher.get("id") and not teacher.get("family"):
        return [f"`{key}`: `id` needs `family` (llama, gemma2, gemma3 or mistral)"]
    if teacher.get("id") and "/" in teacher["id"] and not Path(teacher["id"]).exists() and not teacher.get("revision"):
        return [f"`{key}.revision`: pin a hub revision (commit hash) for reproducibility"]
    return []


def _source_references(corpora: dict) -> list[str]:
    """Source names unique within a corpus; one URL per download file name."""
    from gendiag.data.corpus import corpus_sources, download_name

    problems, downloads = [], {}
    for corpus, spec in corpora.items():
        names = [s["name"] for s in corpus_sources(spec)]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            problems.append(f"`corpora.{corpus}.sources`: names {repeated} repeat; give each source its own `name`")
        for source in corpus_sources(spec):
            if source.get("url"):
                file = download_name(source)
                if downloads.setdefault(file, source["url"]) != source["url"]:
                    problems.append(
                        f"`corpora.{corpus}`: {source['url']} and {downloads[file]} both download to '{file}';"
                        " set `filename` on one of them"
                    )
    return problems
