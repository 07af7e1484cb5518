"""The shipped recipes by name: listing, copying, ``train NAME``, and what a built package carries."""

import runpy
from pathlib import Path

import pytest
import yaml

from hf_compress import Recipe
from hf_compress import recipes as shipped
from hf_compress.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]
REPOSITORY_RECIPES = sorted(path.stem for path in (ROOT / "recipes").glob("*.yaml"))
SAMPLE = ROOT / "examples" / "data" / "conll-sample"


def _run(argv, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(argv)
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


@pytest.fixture
def built_package(tmp_path, monkeypatch) -> Path:
    """The ``_shipped`` folder as setup.py writes it into a build, used in place of the clone's ``recipes/``."""
    setup = runpy.run_path(str(ROOT / "setup.py"), run_name="setup")  # not __main__: setup() is not called
    target = tmp_path / "site-packages" / "hf_compress" / "_shipped"
    setup["copy_shipped_files"](ROOT, target)
    monkeypatch.setattr(shipped, "SHIPPED_DIR", target)
    return target


def test_the_shipped_recipes_are_the_repository_s_with_a_one_line_description():
    recipes = shipped.list_recipes()
    assert [recipe.name for recipe in recipes] == REPOSITORY_RECIPES
    for recipe in recipes:
        first = recipe.path.read_text().splitlines()[0]
        assert first == f"# {recipe.description}"
        assert 20 < len(recipe.description) <= 117 and not recipe.description.endswith(":"), recipe.name


def test_recipes_command_lists_each_name_with_its_description(capsys):
    status, out, _ = _run(["recipes"], capsys)
    assert status == 0
    lines = out.splitlines()
    for recipe in shipped.list_recipes():
        (line,) = [line for line in lines if line.split(" ", 1)[0] == recipe.name]
        assert line.split(None, 1)[1] == recipe.description
    assert "hf-compress train NAME" in out


def test_the_build_hook_ships_every_recipe_and_the_quickstart_sample(built_package, tmp_path, monkeypatch):
    assert sorted(p.stem for p in (built_package / "recipes").iterdir()) == REPOSITORY_RECIPES
    shipped_sample = built_package / "examples" / "data" / "conll-sample"
    assert sorted(p.name for p in shipped_sample.iterdir()) == sorted(p.name for p in SAMPLE.iterdir())
    assert (shipped_sample / "train.txt").read_bytes() == (SAMPLE / "train.txt").read_bytes()
    assert shipped.recipes_dir() == built_package / "recipes"
    monkeypatch.chdir(tmp_path)  # an empty folder: the recipe reads the sample the package ships
    recipe = shipped.load_recipe("quickstart-ner")
    assert recipe.data.train_file == str(shipped_sample / "train.txt")
    assert recipe.data.validation_file == str(shipped_sample / "valid.txt")


def test_the_source_distribution_carries_what_the_build_hook_copies():
    setup = runpy.run_path(str(ROOT / "setup.py"), run_name="setup")
    manifest = (ROOT / "MANIFEST.in").read_text().splitlines()
    for folder in setup["SHIPPED"]:
        assert f"graft {folder}" in manifest


def test_a_file_the_package_does_not_ship_is_read_from_the_working_directory(built_package, tmp_path, monkeypatch):
    """small-fast's transfer.txt is the user's: run by name, the recipe reads it where the command runs."""
    monkeypatch.chdir(tmp_path)
    recipe = shipped.load_recipe("conll2003-small-fast")
    assert recipe.distillation.transfer.files == [str(tmp_path / "transfer.txt")]
    # a recipe file keeps every relative path relative to itself, found or not
    recipe = Recipe.from_yaml(built_package / "recipes" / "conll2003-small-fast.yaml")
    assert recipe.distillation.transfer.files == [str(built_package / "recipes" / "transfer.txt")]


def test_train_takes_a_shipped_name_and_checks_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    status, out, err = _run(["train", "quickstart-ner", "--output_dir", "out", "--check"], capsys)
    assert status == 0, err
    printed = yaml.safe_load(out)
    assert printed["data"]["train_file"] == str(SAMPLE / "train.txt")
    assert printed == Recipe.from_yaml(ROOT / "recipes" / "quickstart-ner.yaml").to_dict()
    assert shipped.load_recipe("quickstart-ner.yaml") == shipped.load_recipe("quickstart-ner")


def test_a_file_of_the_same_name_wins_over_the_shipped_recipe(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "quickstart-ner").write_text(yaml.safe_dump({"data": {"task": "ner", "train_file": "mine.txt"}}))
    recipe = shipped.load_recipe("quickstart-ner")
    assert recipe.data.train_file == str(tmp_path / "mine.txt") and recipe.model is None


@pytest.mark.parametrize("name, hint", [("quickstart-nre", "did you mean 'quickstart-ner'?"), ("nothing", "")])
def test_an_unknown_recipe_lists_the_shipped_ones(name, hint, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    status, out, err = _run(["train", name, "--output_dir", "out"], capsys)
    assert status == 2 and out == "" and len(err.splitlines()) == 1
    assert f"unknown recipe '{name}'" in err and hint in err
    assert ", ".join(REPOSITORY_RECIPES) in err
    with pytest.raises(shipped.UnknownRecipeError, match="shipped: conll2003-distill, "):
        shipped.load_recipe(name)
    status, _, err = _run(["recipes", "copy", name], capsys)
    assert status == 2 and ", ".join(REPOSITORY_RECIPES) in err


def test_a_missing_recipe_file_names_the_shipped_recipe_it_may_mean(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the README's command typed outside a clone
    status, _, err = _run(["train", "recipes/quickstart-ner.yaml", "--output_dir", "out"], capsys)
    assert status == 2
    assert "recipe file not found: recipes/quickstart-ner.yaml; did you mean 'quickstart-ner'? shipped: " in err


def test_copy_writes_a_recipe_that_reads_the_shipped_sample_from_anywhere(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    status, out, _ = _run(["recipes", "copy", "quickstart-ner"], capsys)
    copy = tmp_path / "quickstart-ner.yaml"
    assert status == 0 and str(copy.name) in out
    source = (ROOT / "recipes" / "quickstart-ner.yaml").read_text()
    text = copy.read_text()
    comments = [line for line in source.splitlines() if line.startswith("#")]
    assert [line for line in text.splitlines() if line.startswith("#")] == comments
    assert f"train_file: {SAMPLE / 'train.txt'}   # relative to this file" in text
    assert Recipe.from_yaml(copy) == shipped.load_recipe("quickstart-ner")

    status, _, err = _run(["recipes", "copy", "quickstart-ner", str(tmp_path)], capsys)
    assert status == 2 and "exists" in err and "--overwrite" in err
    copy.write_text("edited")
    assert _run(["recipes", "copy", "quickstart-ner", ".", "--overwrite"], capsys)[0] == 0
    assert copy.read_text() == text
    status, _, _ = _run(["recipes", "copy", "sst2-distill", "mine.yaml"], capsys)
    assert status == 0 and (tmp_path / "mine.yaml").read_text() == (ROOT / "recipes" / "sst2-distill.yaml").read_text()
    status, _, err = _run(["recipes", "copy", "sst2-distill", "no/such/folder/x.yaml"], capsys)
    assert status == 2 and "no such folder" in err


def test_copy_refuses_to_write_over_the_shipped_recipe(capsys):
    status, _, err = _run(["recipes", "copy", "sst2-distill", str(ROOT / "recipes")], capsys)
    assert status == 2 and "shipped recipe itself" in err
