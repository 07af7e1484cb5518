"""The README's set-up commands are the ones CI and the quickstart recipe rely on."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from hf_compress import Recipe
from hf_compress.tasks.token_classification import read_conll

ROOT = Path(__file__).resolve().parents[1]


def _bash_blocks(text: str) -> list[str]:
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def _setup_commands() -> list[str]:
    """The README's set-up commands: the bash blocks of its "Set up and run" section, in order."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Set up and run", 1)[1].split("\n## ", 1)[0]
    return _bash_blocks(section)


def _ci_lines() -> list[str]:
    return (ROOT / ".ci" / "run").read_text().splitlines()


#: The tested stacks: the constraints file and the extras installed with it.
STACKS = {
    "constraints.txt": ("quickstart", "plot", "dev", "docs"),  # the default: the newest transformers 5, no Optimum
    "constraints-optimum.txt": ("optimum", "dev"),  # transformers 4.57 with Optimum
    "constraints-floors.txt": ("dev",),  # the lowest release of each direct requirement
}
#: The torch and transformers each stack pins (a version, or a prefix ending in ".").
STACK_VERSIONS = {
    "constraints.txt": ("2.13.0", "5."),
    "constraints-optimum.txt": ("2.13.0", "4.57."),
    "constraints-floors.txt": (None, None),  # the lower bounds (test_the_floors_are_the_lower_bounds)
}


def _pyproject_requirements(extras: tuple[str, ...] | None = None) -> list[Requirement]:
    """The direct requirements: the core ones and those of ``extras`` (every extra by default)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    optional = project["optional-dependencies"]
    chosen = [r for name, extra in optional.items() if extras is None or name in extras for r in extra]
    return [Requirement(line) for line in [*project["dependencies"], *chosen]]


def _constraints(name: str = "constraints.txt") -> list[Requirement]:
    lines = (ROOT / name).read_text().splitlines()
    return [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]


def test_readme_has_the_two_setup_commands():
    commands = _setup_commands()
    assert len(commands) == 2
    assert all("\n" not in command for command in commands)  # one line each, to copy and paste
    assert "hf-compress train recipes/" in commands[0] and commands[1].endswith("python -m pytest -q")
    for command in commands:
        assert command.startswith("python -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 -e ")


def test_ci_runs_the_readme_setup_commands_verbatim_in_order():
    lines = _ci_lines()
    positions = []
    for command in _setup_commands():
        matches = [i for i, line in enumerate(lines) if command in line]
        assert len(matches) == 1, f"{command!r} is not on exactly one line of .ci/run"
        line = lines[matches[0]]
        # the whole line is the command, at most followed by `|| exit`
        assert line.startswith(command) and line[len(command) :].strip() in ("", "|| exit"), line
        positions.append(matches[0])
    assert positions == sorted(positions)


def test_nothing_in_ci_before_the_readme_commands_upgrades_pip_or_sets_the_environment():
    first = next(i for i, line in enumerate(_ci_lines()) if _setup_commands()[0] in line)
    before = [line.split("#", 1)[0].strip() for line in _ci_lines()[:first]]
    commands = [line for line in before if line]
    assert commands, ".ci/run has no set-up lines before the README's commands"
    for line in commands:
        assert not re.search(r"\bpip\b", line), line
        assert not re.search(r"\b(export|env|declare|setenv)\b", line), line
        assert not re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", line), line  # a variable assignment
        assert "HF_" not in line and "TOKENIZERS_" not in line, line


def test_readme_commands_install_with_the_constraints_file():
    assert (ROOT / "constraints.txt").is_file()
    for command in _setup_commands():
        install = re.search(r"pip install ([^&]*)", command).group(1).split()
        assert install[install.index("-c") + 1] == "constraints.txt", command
        assert "torch==2.13.0" in install


@pytest.mark.parametrize("requirement", _pyproject_requirements(), ids=str)
def test_every_direct_requirement_has_an_upper_bound(requirement):
    upper = [spec for spec in requirement.specifier if spec.operator in ("<", "<=", "==", "~=", "===")]
    assert upper, f"{requirement} admits every future release"


@pytest.mark.parametrize("constraints", list(STACKS))
def test_the_constraints_pin_the_direct_requirements_within_their_bounds(constraints):
    pins: dict[str, list[Requirement]] = {}
    for pin in _constraints(constraints):
        specs = list(pin.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"{pin} is not an exact pin"
        pins.setdefault(canonicalize_name(pin.name), []).append(pin)
    assert canonicalize_name("hf-compress") not in pins  # the project itself is installed from the clone
    for requirement in _pyproject_requirements(STACKS[constraints]):
        versions = pins.get(canonicalize_name(requirement.name))
        assert versions, f"{requirement.name} is not pinned in {constraints}"
        for pin in versions:
            version = next(iter(pin.specifier)).version
            assert requirement.specifier.contains(version, prereleases=True), f"{pin} does not fit {requirement}"
    torch, transformers = STACK_VERSIONS[constraints]
    if torch is not None:
        assert next(iter(pins["torch"][0].specifier)).version == torch
        assert next(iter(pins["transformers"][0].specifier)).version.startswith(transformers)
    assert ("optimum-onnx" in pins) == ("optimum" in STACKS[constraints])


def test_the_floors_are_the_lower_bounds():
    """constraints-floors.txt pins every core requirement to the lowest release pyproject.toml admits."""
    floors = _constraints("constraints-floors.txt")
    pins = {canonicalize_name(pin.name): next(iter(pin.specifier)).version for pin in floors}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for requirement in map(Requirement, project["dependencies"]):
        lower = [spec.version for spec in requirement.specifier if spec.operator == ">="]
        assert len(lower) == 1, f"{requirement} has no lower bound"
        pinned = pins[canonicalize_name(requirement.name)]
        assert Version(pinned) == Version(lower[0]), f"{requirement.name}=={pinned} is not the floor of {requirement}"


def test_ci_installs_the_wheel_and_tests_the_stacks():
    ci = (ROOT / ".ci" / "run").read_text()
    for constraints in ("constraints.txt", "constraints-optimum.txt"):
        assert re.search(rf"pip install [^\n]*-c {re.escape(constraints)} && python -m pytest -q", ci), constraints
    assert "python -m build" in ci and "twine check" in ci
    assert re.search(r"pip\" install [^\n]*dist/hf_compress-\*\.whl", ci)  # the wheel, not the clone
    assert "hf-compress train quickstart-ner " in ci  # by name, in a folder outside the clone
    assert 'pip" install torch==2.14.1 && ' in ci  # torch first, as a user has it; the package keeps it


@pytest.mark.parametrize("constraints", list(STACKS))
def test_each_python_version_gets_one_pin_per_package(constraints):
    """Pins under markers never overlap: each interpreter sees one version."""
    for python in ("3.11", "3.12", "3.13"):
        environment = {"python_version": python, "python_full_version": f"{python}.0"}
        names = [
            canonicalize_name(pin.name)
            for pin in _constraints(constraints)
            if pin.marker is None or pin.marker.evaluate(environment)
        ]
        assert len(names) == len(set(names)), python


def test_quickstart_command_uses_the_shipped_recipe_and_sample():
    quickstart = _setup_commands()[0]
    recipe_path = re.search(r"hf-compress train (\S+)", quickstart).group(1)
    recipe = Recipe.from_yaml(ROOT / recipe_path)
    train, valid = read_conll(recipe.data.train_file), read_conll(recipe.data.validation_file)
    assert (len(train), len(valid)) == (1200, 300)
    tags = {tag for row in train["ner_tags"] for tag in row}
    assert tags == {"O", *(f"{p}-{t}" for p in "BI" for t in ("PER", "ORG", "LOC", "MISC"))}


def test_sample_data_is_what_its_generator_writes(tmp_path):
    subprocess.run(
        [sys.executable, str(ROOT / "examples/data/make_conll_sample.py"), "--output_dir", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    for name in ("train.txt", "valid.txt"):
        assert (tmp_path / name).read_text() == (ROOT / "examples/data/conll-sample" / name).read_text()
