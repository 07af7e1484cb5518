"""Recipes: parsing, overrides, and clear errors for bad recipes and inputs before any training."""

from pathlib import Path

import pytest
import yaml
from conftest import NER_LABELS, tiny_bert_config
from transformers import BertForTokenClassification, BertTokenizerFast, TrainingArguments

from hf_compress import CompressionTrainer, DistillationConfig, Recipe, RecipeError
from hf_compress.cli import main as cli_main
from hf_compress.compat import training_arguments
from hf_compress.tasks import read_conll

GOOD = {
    "model": {"teacher": "some/teacher", "student": {"from_teacher_layers": [0, 2, 4]}},
    "data": {"task": "ner", "train_file": "train.txt", "validation_file": "valid.txt"},
    "distillation": {"temperature": 2.0, "alpha": 0.5, "hidden_states": {"weight": 1.0, "layer_map": {0: 1, 2: 5}}},
    "training": {"num_train_epochs": 3, "learning_rate": 1.0e-4},
}


def with_change(dotted: str, value) -> dict:
    recipe = yaml.safe_load(yaml.safe_dump(GOOD))
    node = recipe
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node[part]
    node[leaf] = value
    return recipe


def test_good_recipe_round_trips(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    recipe = Recipe.from_yaml(path)
    assert recipe.distillation.hidden_states.layer_map == {0: 1, 2: 5}
    assert recipe.model.student.from_teacher_layers == [0, 2, 4]
    assert recipe.data.train_file == str(tmp_path / "train.txt")  # relative to the recipe file
    assert recipe.training["learning_rate"] == 1e-4
    again = Recipe.from_dict(yaml.safe_load(recipe.to_yaml()))
    assert again == recipe


def test_overrides_parse_values_and_create_blocks(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    recipe = Recipe.from_yaml(
        path,
        overrides={
            "distillation.alpha": "0.9",
            "training.num_train_epochs": "1",
            "distillation.attentions.weight": "0.5",
            "distillation.hidden_states.layer_map.1": "3",
        },
    )
    assert recipe.distillation.alpha == 0.9
    assert recipe.training["num_train_epochs"] == 1
    assert recipe.distillation.attentions.weight == 0.5
    assert recipe.distillation.hidden_states.layer_map == {0: 1, 2: 5, 1: 3}


def test_numbers_in_exponent_notation_without_a_dot_are_numbers(tmp_path):
    """YAML 1.1 reads ``3e-4`` as a string; a recipe (and ``--training.learning_rate 3e-4``) means the number."""
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(GOOD).replace("learning_rate: 0.0001", "learning_rate: 2e-5"))
    assert yaml.safe_load(path.read_text())["training"]["learning_rate"] == "2e-5"
    recipe = Recipe.from_yaml(path, overrides={"distillation.temperature": "4E0"})
    assert recipe.training["learning_rate"] == 2e-5 and recipe.distillation.temperature == 4.0
    recipe = Recipe.from_yaml(path, overrides={"training.learning_rate": "3e-4"})
    assert recipe.training["learning_rate"] == 3e-4
    assert TrainingArguments(str(tmp_path / "out"), **recipe.training).learning_rate == 3e-4
    for text in ("nan", "inf", "1e400"):
        with pytest.raises(RecipeError, match="allowed: a number"):
            Recipe.from_yaml(path, overrides={"training.learning_rate": text})


def test_data_files_are_relative_to_the_recipe_file_and_overrides_to_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "recipes").mkdir()
    path = tmp_path / "recipes" / "recipe.yaml"
    path.write_text(yaml.safe_dump({"data": {"task": "ner", "train_file": "../data/train.txt"}}))
    monkeypatch.chdir(tmp_path / "recipes")
    recipe = Recipe.from_yaml(path, overrides={"data.validation_file": "../shared/valid.txt"})
    assert recipe.data.train_file == str(tmp_path / "data" / "train.txt")
    assert recipe.data.validation_file == str(tmp_path / "shared" / "valid.txt")
    monkeypatch.chdir(tmp_path)  # a command typed from elsewhere: the override follows the working directory
    recipe = Recipe.from_yaml("recipes/recipe.yaml", overrides={"data.train_file": "shared/train.txt"})
    assert recipe.data.train_file == str(tmp_path / "shared" / "train.txt")
    recipe = Recipe.from_yaml("recipes/recipe.yaml")  # a recipe named relative to the working directory
    assert recipe.data.train_file == str(tmp_path / "data" / "train.txt")  # absolute: saved recipes work anywhere


def test_student_shorthand_string():
    recipe = Recipe.from_dict(with_change("model", {"teacher": "t", "student": "my/student"}))
    assert recipe.model.student.name_or_path == "my/student"


@pytest.mark.parametrize(
    "dotted, value, message",
    [
        ("distillation.temprature", 2.0, r"distillation\.temprature.*unknown key; did you mean 'temperature'"),
        ("distillation.alpha", 1.5, r"distillation\.alpha': got 1\.5; allowed: a number in \[0\.0, 1\.0\]"),
        ("distillation.alpha", -0.1, r"distillation\.alpha"),
        (
            "distillation.temperature",
            0,
            r"distillation\.temperature': got 0\.0; allowed: a number in \(0\.0, 100\.0\]",
        ),
        ("distillation.temperature", "hot", r"distillation\.temperature': got 'hot'; allowed: a number"),
        ("distillation.hidden_states.weight", -1, r"distillation\.hidden_states\.weight"),
        ("distillation.hidden_states.layer_map", [1, 2], r"layer_map.*allowed: a mapping"),
        ("distillation.hidden_states.layer_map", {"x": 1}, r"layer_map\.x': got 'x'; allowed: an integer"),
        ("model.student.from_teacher_layers", [0, -1], r"model\.student\.from_teacher_layers.*-1"),
        ("model.student.from_teacher_layers", "0,2,4", r"from_teacher_layers.*allowed: a list"),
        ("model.train_teacher", "yes", r"model\.train_teacher': got 'yes'; allowed: true or false"),
        ("data.task", "translation", r"data\.task': got 'translation'; allowed: ner, token-classification"),
        ("data.max_length", 100000, r"data\.max_length"),
        ("training.learning_rat", 1e-4, r"training\.learning_rat.*did you mean 'learning_rate'"),
        ("training.num_train_epochs", "three", r"training\.num_train_epochs.*allowed: a number"),
        ("training.output_dir", "x", r"training\.output_dir.*command line"),
        ("pruning", {"final_sparsity": 0.5}, r"pruning\.end_epoch.*give start_epoch and end_epoch"),
        ("pruning", {"final_sparsity": 1.0, "start_step": 0, "end_step": 10}, r"pruning\.final_sparsity.*1\.0"),
    ],
)
def test_bad_recipe_values_are_named(dotted, value, message):
    with pytest.raises(RecipeError, match=message):
        Recipe.from_dict(with_change(dotted, value))


def test_missing_blocks_and_combinations():
    with pytest.raises(RecipeError, match="model.student"):
        Recipe.from_dict({"model": {}})
    with pytest.raises(RecipeError, match="from_teacher_layers.*needs 'model.teacher'"):
        Recipe.from_dict({"model": {"student": {"from_teacher_layers": [0]}}})
    with pytest.raises(RecipeError, match="either 'name_or_path' or 'from_teacher_layers'"):
        Recipe.from_dict({"model": {"teacher": "t", "student": {"name_or_path": "s", "from_teacher_layers": [0]}}})
    with pytest.raises(RecipeError, match="data.dataset.*'train_file'"):
        Recipe.from_dict({"data": {"task": "ner"}})


def test_bad_yaml_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("distillation: {alpha: [\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        Recipe.from_yaml(path)
    with pytest.raises(FileNotFoundError, match="recipe file not found"):
        Recipe.from_yaml(tmp_path / "missing.yaml")


def test_cli_reports_recipe_errors_with_exit_code_2(tmp_path, capsys):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    with pytest.raises(SystemExit) as stop:
        cli_main(["train", str(path), "--output_dir", str(tmp_path / "out"), "--distillation.alpha", "2"])
    assert stop.value.code == 2
    assert "distillation.alpha" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:  # --check reads the data files too
        cli_main(["train", str(path), "--output_dir", str(tmp_path / "out"), "--check"])
    assert stop.value.code == 2
    assert "data.train_file: file not found" in capsys.readouterr().err
    sample = Path(__file__).resolve().parents[1] / "examples" / "data" / "conll-sample"
    for name in ("train.txt", "valid.txt"):
        (tmp_path / name).write_text((sample / name).read_text())
    with pytest.raises(SystemExit) as stop:
        cli_main(["train", str(path), "--output_dir", str(tmp_path / "out"), "--check"])
    assert stop.value.code == 0
    assert "from_teacher_layers" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------- models and data


def _trainer(student, teacher, tmp_path, **kwargs):
    args = TrainingArguments(str(tmp_path / "out"), report_to="none", use_cpu=True)
    return CompressionTrainer(model=student, teacher=teacher, args=args, **kwargs)


def test_layer_map_out_of_range_fails_before_training(tokenizer, tiny_ner_teacher, tmp_path):
    student = BertForTokenClassification(tiny_bert_config(len(tokenizer), NER_LABELS, num_hidden_layers=2))
    recipe = Recipe.from_dict({"distillation": {"hidden_states": {"layer_map": {2: 3}}}})
    with pytest.raises(RecipeError, match=r"distillation\.hidden_states\.layer_map\.2': got 2.*student has 2"):
        _trainer(student, tiny_ner_teacher, tmp_path, recipe=recipe)


def test_label_sets_differ(tokenizer, tiny_ner_teacher, tmp_path):
    student = BertForTokenClassification(tiny_bert_config(len(tokenizer), ["O", "B-X", "I-X"]))
    with pytest.raises(ValueError, match="label sets differ"):
        _trainer(student, tiny_ner_teacher, tmp_path)
    shuffled = BertForTokenClassification(tiny_bert_config(len(tokenizer), NER_LABELS[::-1]))
    with pytest.raises(ValueError, match="same labels in a different order"):
        _trainer(shuffled, tiny_ner_teacher, tmp_path)


def test_vocabularies_differ(tokenizer, tiny_ner_teacher, tmp_path, tokenizer_dir):
    student = BertForTokenClassification(tiny_bert_config(len(tokenizer) + 10, NER_LABELS))
    with pytest.raises(ValueError, match="vocabularies differ: vocab_size"):
        _trainer(student, tiny_ner_teacher, tmp_path)
    # same size, different tokens
    vocab = tmp_path / "vocab.txt"
    words = open(f"{tokenizer_dir}/vocab.txt").read().split("\n")
    words[10] = "zzzz"
    vocab.write_text("\n".join(words))
    other = BertTokenizerFast(str(vocab))  # positional: 4.x calls it vocab_file, 5.x vocab
    same_size = BertForTokenClassification(tiny_bert_config(len(tokenizer), NER_LABELS))
    with pytest.raises(ValueError, match="tokenizers differ"):
        _trainer(same_size, tiny_ner_teacher, tmp_path, processing_class=tokenizer, teacher_processing_class=other)


def test_distillation_block_without_teacher(tokenizer, tmp_path):
    student = BertForTokenClassification(tiny_bert_config(len(tokenizer), NER_LABELS))
    with pytest.raises(RecipeError, match="needs a teacher"):
        _trainer(student, None, tmp_path, recipe={"distillation": {"alpha": 0.5}})


def test_distillation_config_validates_in_python():
    with pytest.raises(RecipeError, match="'alpha': got 3"):
        DistillationConfig(alpha=3)


def test_missing_and_malformed_data_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="data file not found"):
        read_conll(tmp_path / "nope.txt")
    bad = tmp_path / "bad.txt"
    bad.write_text("-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects\n")
    with pytest.raises(ValueError, match=r"bad\.txt, line 4: expected 'TOKEN \.\.\. TAG'.*'rejects'"):
        read_conll(bad)
    bad.write_text("EU NNP B-NP B-ORG\nrejects VBZ B-VP X-ORG\n")
    with pytest.raises(ValueError, match=r"bad\.txt, line 2: 'X-ORG' is not an IOB tag"):
        read_conll(bad)
    bad.write_text("\n\n-DOCSTART- -X- -X- O\n")
    with pytest.raises(ValueError, match="no sentences found"):
        read_conll(bad)


def test_cli_missing_data_file_fails_before_models(tmp_path, capsys):
    recipe = with_change("data.train_file", str(tmp_path / "absent.txt"))
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(SystemExit) as stop:
        cli_main(["train", str(path), "--output_dir", str(tmp_path / "out")])
    assert stop.value.code == 2
    assert "data.train_file: file not found:" in capsys.readouterr().err


def test_yaml_no_and_yes_stay_strings(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("training:\n  save_strategy: no\n  use_cpu: true\n")
    recipe = Recipe.from_yaml(path, overrides={"training.eval_strategy": "no", "training.disable_tqdm": "false"})
    assert recipe.training == {"save_strategy": "no", "use_cpu": True, "eval_strategy": "no", "disable_tqdm": False}


SHIPPED_RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED_RECIPES, ids=lambda path: path.name)
def test_shipped_recipes_parse_and_round_trip(path):
    recipe = Recipe.from_yaml(path)
    assert recipe.model is not None and recipe.data is not None
    assert Recipe.from_dict(yaml.safe_load(recipe.to_yaml())) == recipe
    # every training key is a TrainingArguments field of this stack (warmup_ratio and group_by_length translated)
    TrainingArguments(output_dir="unused", **training_arguments(recipe.training))
