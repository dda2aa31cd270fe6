"""The conda environments cannot drift from the pins the virtual environment is tested with.

Conda channels are out of reach on our machines, so the env files are checked statically: every
pin equals pyproject.toml's (and requirements.lock's), and every rule's env holds what its script
imports, following the `gendiag` modules it uses down to the third-party packages.
"""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from conftest import REPO

ENVS = sorted((REPO / "envs").glob("*.yaml"))
RULE_FILES = sorted((REPO / "workflow/rules").glob("*.smk"))


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(requirements: list[str]) -> dict[str, str]:
    """{package: version} of `name==version` requirements."""
    out = {}
    for requirement in requirements:
        name, sep, version = requirement.partition("==")
        if sep:
            out[canonical(name.split("[")[0].strip())] = version.strip()
    return out


PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
PROJECT_PINS = pins(PYPROJECT["dependencies"])
LOCK_PINS = pins((REPO / "requirements.lock").read_text().splitlines())


def env_pip(path: Path) -> list[str]:
    env = yaml.safe_load(path.read_text())
    pip = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip) == 1, f"{path.name}: expected one `pip:` list under dependencies"
    return pip[0]


@pytest.mark.parametrize("path", ENVS, ids=lambda p: p.name)
def test_env_file_pins_every_package_as_pyproject_does(path):
    env = yaml.safe_load(path.read_text())
    assert env.get("channels") == ["conda-forge", "nodefaults"], f"{path.name}: channels"
    python = [d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python")]
    assert python == ["python =3.11"], f"{path.name}: python must match requires-python (3.11); got {python}"
    pip = env_pip(path)
    assert "-e .." in pip, f"{path.name}: the gendiag package itself (`-e ..`) is missing"
    unpinned = [r for r in pip if r != "-e .." and "==" not in r]
    assert not unpinned, f"{path.name}: unpinned requirements {unpinned}; pin them as pyproject.toml does"
    for name, version in pins(pip).items():
        assert name in PROJECT_PINS, f"{path.name}: {name} is not a dependency in pyproject.toml"
        assert version == PROJECT_PINS[name], (
            f"{path.name} pins {name}=={version} but pyproject.toml pins {name}=={PROJECT_PINS[name]}"
        )


def test_requirements_lock_pins_every_dependency_as_pyproject_does():
    for name, version in PROJECT_PINS.items():
        if name == "torch":  # installed first by the Makefile, pinned there, not in the lock
            continue
        assert LOCK_PINS.get(name) == version, (
            f"pyproject.toml pins {name}=={version}, requirements.lock has {LOCK_PINS.get(name)}"
        )


def rules_with_envs() -> list[tuple[str, str, Path, Path]]:
    """(rule file, rule, env file, script) for every rule of the workflow."""
    found = []
    for smk in RULE_FILES:
        for block in re.split(r"\n(?=rule \w+:)", smk.read_text()):
            rule = re.match(r"rule (\w+):", block)
            if not rule:
                continue
            conda = re.search(r"\n    conda:\n        \"([^\"]+)\"", block)
            script = re.search(r"\n    script:\n        \"([^\"]+)\"", block)
            assert conda, f"{smk.name}: rule {rule.group(1)} has no `conda:` env"
            env = (smk.parent / conda.group(1)).resolve()
            found.append((smk.name, rule.group(1), env, (smk.parent / script.group(1)).resolve() if script else None))
    return found


def imported_modules(path: Path, module_level_only: bool) -> set[str]:
    """Modules `path` imports; in a library module, only those imported when it is imported.

    A library function that imports a package inside its body does so on purpose (an optional,
    heavy dependency used by one function), so only module-level imports count there.
    """
    tree = ast.parse(path.read_text())
    names = set()
    nodes = ast.walk(tree)
    if module_level_only:
        nodes = [n for top in tree.body if not isinstance(top, (ast.FunctionDef, ast.ClassDef))
                 for n in ast.walk(top)]
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def third_party_imports(script: Path) -> set[str]:
    """Top-level third-party modules a script needs, through every gendiag module it imports."""
    seen, todo, third_party = set(), [script], set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in imported_modules(path, module_level_only=path != script):
            top = name.split(".")[0]
            if top == "gendiag":
                parts = name.split(".")
                module = REPO / "src" / Path(*parts)
                for candidate in (module.with_suffix(".py"), module / "__init__.py"):
                    if candidate.exists():
                        todo.append(candidate)
                for parent in range(1, len(parts)):  # importing a.b.c runs a/__init__ and a/b/__init__
                    init = REPO / "src" / Path(*parts[:parent]) / "__init__.py"
                    if init.exists():
                        todo.append(init)
            elif top not in sys.stdlib_module_names and top != "snakemake":
                third_party.add(top)
    return third_party


def installed_closure(requirements: dict[str, str]) -> set[str]:
    """The packages an env installs: its pins and everything they require, as installed here."""
    closure, todo = set(), list(requirements)
    while todo:
        name = todo.pop()
        if name in closure:
            continue
        closure.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for requirement in requires:
            if "extra ==" in requirement:
                continue
            todo.append(canonical(re.split(r"[\s;<>=!~\[(]", requirement, maxsplit=1)[0]))
    return closure


def test_every_rule_has_an_env_and_it_holds_what_the_rule_imports():
    distributions = metadata.packages_distributions()
    rules = rules_with_envs()
    assert len(rules) > 20
    problems = []
    closures = {}
    for smk, rule, env, script in rules:
        if not env.is_file():
            problems.append(f"{smk}: rule {rule} names {env}, which does not exist")
            continue
        if script is None:
            continue
        if env not in closures:
            closures[env] = installed_closure(pins(env_pip(env)))
        for module in sorted(third_party_imports(script)):
            providers = {canonical(d) for d in distributions.get(module, [module])}
            if not providers & closures[env]:
                problems.append(f"{smk}: rule {rule} ({script.name}) imports {module}, "
                                f"which {env.name} does not install; add {sorted(providers)} to it")
    assert not problems, "\n".join(problems)
