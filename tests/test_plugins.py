"""Techniques from outside the package: registration rules, entry points, ``imports:`` and ``--import``; export
hooks that get the run's techniques with their configs and report under their own names; the public callbacks
module; student-preparation steps."""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import textwrap
from dataclasses import dataclass, field

import pytest
import torch
import yaml
from conftest import NER_LABELS, tiny_bert_config
from transformers import BertForTokenClassification

import hf_compress.technique as technique_module
from hf_compress import ExportConfig, Recipe, RecipeError, export_model
from hf_compress.checks import checked, count
from hf_compress.cli import main as cli_main
from hf_compress.configs import StudentConfig, VocabularyConfig
from hf_compress.export.hub import model_card
from hf_compress.plugins import ENTRY_POINT_GROUP, TechniqueRegistrationError
from hf_compress.students import StudentDraft, prepare_student, register_student_step, student_steps
from hf_compress.technique import (
    API_VERSION,
    ExportFacts,
    Technique,
    TechniqueExport,
    get_technique,
    register_technique,
    registered_techniques,
    restore_saved,
)

PLUGIN_SOURCE = """
from dataclasses import dataclass, field

from hf_compress import Technique
from hf_compress.checks import checked, number


@checked
@dataclass
class {name}Config:
    rate: float = field(default=0.5, metadata=number(0.0, 1.0))


class {name}(Technique):
    name = "{key}"
    config_class = {name}Config
"""


@pytest.fixture
def registry(monkeypatch):
    """The registry as it is, restored after the test; plugins count as loaded unless a test says otherwise."""
    monkeypatch.setattr(technique_module, "_REGISTRY", dict(technique_module._REGISTRY))
    monkeypatch.setattr(technique_module, "_PLUGINS", {"loaded": True, "error": None})
    return technique_module._REGISTRY


def _plugin_module(tmp_path, monkeypatch, module: str, name: str, key: str, decorated: bool = False) -> None:
    source = PLUGIN_SOURCE.format(name=name, key=key)
    if decorated:
        source = source.replace(f"\nclass {name}(", f"\n@register_technique\nclass {name}(").replace(
            "from hf_compress import Technique", "from hf_compress import Technique, register_technique"
        )
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))


def _entry_points(monkeypatch, *values: tuple[str, str]) -> None:
    points = [importlib.metadata.EntryPoint(name, value, ENTRY_POINT_GROUP) for name, value in values]

    def entry_points(**selection):
        assert selection == {"group": ENTRY_POINT_GROUP}
        return points

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)


@checked
@dataclass
class ProbeConfig:
    level: int = field(default=1, metadata=count())


class ProbeExport(TechniqueExport):
    """Records what its export hooks get; reports keys the export report's top level also has."""

    calls: list = []

    @classmethod
    def restore_saved(cls, model, folder, config):
        cls.calls.append(("restore_saved", config))

    @classmethod
    def prepare_for_export(cls, model, config):
        cls.calls.append(("prepare_for_export", config))
        return ExportFacts(report={"int8": "mine", "size_mb": -1.0, "level": config.level if config else None})

    @classmethod
    def reference_note(cls, model, config):
        cls.calls.append(("reference_note", config))
        return None

    @classmethod
    def card_tags(cls, report):
        return [f"probe-{report['level']}"]

    @classmethod
    def card_section(cls, report):
        return [f"## Probe at level {report['level']}"]


class Probe(Technique):
    name = "probe"
    config_class = ProbeConfig
    export_side = ProbeExport
    calls = ProbeExport.calls


# ------------------------------------------------------------------------------------------------ registration
def test_a_taken_reserved_or_invalid_name_is_refused(registry):
    before = dict(registry)

    class Pruning(Technique):
        name, config_class = "pruning", ProbeConfig

    with pytest.raises(TechniqueRegistrationError, match=r"recipe key 'pruning' is taken by .*GradualPruningCallback"):
        register_technique(Pruning)
    for reserved in ("model", "data", "training", "export", "imports"):
        cls = type("Reserved", (Technique,), {"name": reserved, "config_class": ProbeConfig})
        with pytest.raises(TechniqueRegistrationError, match=f"'{reserved}' is reserved"):
            register_technique(cls)
    for invalid in ("layer-drop", "", "2x", "class", None):
        cls = type("Invalid", (Technique,), {"name": invalid, "config_class": ProbeConfig})
        with pytest.raises(TechniqueRegistrationError, match="not a valid recipe key"):
            register_technique(cls)
    assert isinstance(TechniqueRegistrationError("x"), ValueError)
    assert technique_module._REGISTRY == before


def test_a_plugin_for_another_api_is_refused_at_registration_naming_the_hook(registry):
    """A hook whose arguments differ from the base class's, or an export hook left on the technique (API 1), fails
    when the plugin loads, before any training, in one line."""
    assert API_VERSION == 2

    class OneArgumentExport(TechniqueExport):
        @classmethod
        def prepare_for_export(cls, model):
            return ExportFacts()

    class Outdated(Technique):
        name, config_class, export_side = "outdated", ProbeConfig, OneArgumentExport

    with pytest.raises(TechniqueRegistrationError) as error:
        register_technique(Outdated)
    assert str(error.value) == (
        f"{__name__}.test_a_plugin_for_another_api_is_refused_at_registration_naming_the_hook.<locals>."
        "OneArgumentExport.prepare_for_export: expected classmethod prepare_for_export(model, config) (hf-compress "
        "plugin API 2), found classmethod prepare_for_export(model)"
    )

    class ApiOne(Technique):  # written for 0.1.0: the export hooks on the technique itself
        name, config_class = "api_one", ProbeConfig

        @classmethod
        def prepare_for_export(cls, model):
            return ExportFacts()

        @classmethod
        def card_tags(cls, report):
            return []

    with pytest.raises(
        TechniqueRegistrationError,
        match=r"ApiOne defines prepare_for_export, card_tags on the technique: in hf-compress plugin API 2 the "
        r"export and loading hooks moved to the technique's export half, a hf_compress\.TechniqueExport "
        r"subclass named by its 'export_side'",
    ):
        register_technique(ApiOne)

    class Renamed(Technique):  # a training hook with its arguments renamed
        name, config_class = "renamed", ProbeConfig

        def prepare(self, module):
            pass

    with pytest.raises(
        TechniqueRegistrationError,
        match=r"Renamed\.prepare: expected method prepare\(model\) "
        r"\(hf-compress plugin API 2\), found method prepare\(module\)",
    ):
        register_technique(Renamed)

    class Static(Technique):
        name, config_class = "static_hook", ProbeConfig

        @staticmethod
        def default_config(**resources):
            return None

    with pytest.raises(TechniqueRegistrationError, match=r"expected classmethod default_config\(\*\*resources\)"):
        register_technique(Static)

    class Lossless(Technique):
        name, config_class, contributes_loss = "lossless", ProbeConfig, True

    with pytest.raises(TechniqueRegistrationError, match="sets contributes_loss but does not define loss"):
        register_technique(Lossless)
    assert not {"outdated", "api_one", "renamed", "static_hook", "lossless"} & set(registry)


def test_hooks_may_add_optional_arguments_and_events_may_take_kwargs(registry):
    class Flexible(Technique):
        name, config_class = "flexible", ProbeConfig

        def prepare(self, model, verbose=False):
            pass

        def on_train_begin(self, args, state, control, **kwargs):
            pass

        def loss(self, inputs, outputs, loss, *extra, **more):
            return loss, {}

    assert register_technique(Flexible) is Flexible and get_technique("flexible") is Flexible


def test_the_same_class_registered_again_replaces_itself(registry, tmp_path, monkeypatch):
    _plugin_module(tmp_path, monkeypatch, "reloaded_plugin", "Reloaded", "reloaded", decorated=True)
    module = importlib.import_module("reloaded_plugin")
    first = get_technique("reloaded")
    assert first is module.Reloaded
    importlib.reload(module)  # a new class object, same module and name
    assert get_technique("reloaded") is module.Reloaded is not first


def test_entry_points_are_loaded_when_the_registry_is_first_read(registry, tmp_path, monkeypatch):
    _plugin_module(tmp_path, monkeypatch, "undecorated_plugin", "Undecorated", "undecorated")
    _plugin_module(tmp_path, monkeypatch, "decorated_plugin", "Decorated", "decorated", decorated=True)
    _entry_points(monkeypatch, ("undecorated", "undecorated_plugin:Undecorated"), ("decorated", "decorated_plugin"))
    technique_module._PLUGINS["loaded"] = False
    before = set(registry)
    assert not before & {"undecorated", "decorated"}
    names = [t.name for t in registered_techniques()]
    assert set(names) - before == {"undecorated", "decorated"}
    # surgery order (order 0, as distillation's), then registration order: entry points are loaded by name
    assert names.index("distillation") < names.index("decorated") < names.index("undecorated") < names.index("lowrank")
    recipe = Recipe.from_dict({"undecorated": {"rate": 0.25}})
    assert recipe.undecorated.rate == 0.25 and type(recipe.undecorated).__name__ == "UndecoratedConfig"


def test_a_broken_entry_point_is_one_line_naming_it_on_every_read(registry, tmp_path, monkeypatch):
    (tmp_path / "broken_plugin.py").write_text("import not_a_module_anywhere\n")
    _plugin_module(tmp_path, monkeypatch, "misnamed_plugin", "Misnamed", "misnamed")
    monkeypatch.syspath_prepend(str(tmp_path))
    _entry_points(monkeypatch, ("broken", "broken_plugin:Broken"))
    technique_module._PLUGINS["loaded"] = False
    expected = (
        f"the technique plugin 'broken = broken_plugin:Broken' (entry-point group {ENTRY_POINT_GROUP}) failed to "
        "import: ModuleNotFoundError: No module named 'not_a_module_anywhere'; fix or uninstall the plugin"
    )
    for _ in range(2):
        with pytest.raises(TechniqueRegistrationError) as error:
            get_technique("pruning")
        assert str(error.value) == expected
    _entry_points(monkeypatch, ("other_name", "misnamed_plugin:Misnamed"))
    technique_module._PLUGINS.update(loaded=False, error=None)
    with pytest.raises(TechniqueRegistrationError, match=r"could not be registered: .*recipe key 'misnamed'"):
        registered_techniques()


# ------------------------------------------------------------------------------------------------ imports
def test_recipe_imports_define_blocks_and_are_saved_first(registry, tmp_path, monkeypatch):
    _plugin_module(tmp_path, monkeypatch, "imported_plugin", "Imported", "imported", decorated=True)
    with pytest.raises(RecipeError, match="recipe key 'imported': got .*unknown key"):
        Recipe.from_dict({"imported": {"rate": 0.1}})
    recipe = Recipe.from_dict({"imported": {"rate": 0.1}, "imports": ["imported_plugin"]})
    assert recipe.imports == ["imported_plugin"] and recipe.imported.rate == 0.1
    assert list(recipe.to_dict()) == ["imports", "imported"]
    assert Recipe.from_dict(yaml.safe_load(recipe.to_yaml())) == recipe
    with pytest.raises(RecipeError) as error:
        Recipe.from_dict({"imports": ["imported_plugin", "no_such_module_here"]})
    assert str(error.value) == (
        "recipe key 'imports[1]': got 'no_such_module_here'; the module failed to import: ModuleNotFoundError: "
        "No module named 'no_such_module_here'"
    )
    with pytest.raises(RecipeError, match=r"recipe key 'imports': got 'imported_plugin'; allowed: a list"):
        Recipe.from_dict({"imports": "imported_plugin"})


def test_cli_import_option_registers_before_the_recipe_is_read(registry, tmp_path, monkeypatch, capsys):
    _plugin_module(tmp_path, monkeypatch, "cli_plugin", "CliPlugin", "cli_plugin", decorated=True)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("cli_plugin: {rate: 0.75}\n")
    with pytest.raises(SystemExit) as stop:
        cli_main(["train", str(recipe), "--output_dir", str(tmp_path / "out"), "--import", "cli_plugin", "--check"])
    assert stop.value.code == 0
    assert yaml.safe_load(capsys.readouterr().out) == {"imports": ["cli_plugin"], "cli_plugin": {"rate": 0.75}}
    with pytest.raises(SystemExit) as stop:
        cli_main(["export", str(tmp_path), "--import", "missing_plugin_module"])
    assert stop.value.code == 2
    assert capsys.readouterr().err == (
        "hf-compress: --import missing_plugin_module: the module failed to import: ModuleNotFoundError: No module "
        "named 'missing_plugin_module'\n"
    )
    with pytest.raises(SystemExit) as stop:
        cli_main(["test-technique", "nothing_registered"])
    assert stop.value.code == 2 and "no technique 'nothing_registered' is registered" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ export hooks
def test_export_hooks_get_the_runs_techniques_and_report_under_their_names(registry, tokenizer, tmp_path):
    register_technique(Probe)
    Probe.calls.clear()
    torch.manual_seed(0)
    model = BertForTokenClassification(tiny_bert_config(len(tokenizer), NER_LABELS, num_hidden_layers=1)).eval()
    report = export_model(model, tokenizer, tmp_path / "onnx", ExportConfig(), techniques={"probe": ProbeConfig(3)})
    assert Probe.calls == [("prepare_for_export", ProbeConfig(3))]  # no evaluation data: no reference note
    assert report["techniques"] == {"probe": {"int8": "mine", "size_mb": -1.0, "level": 3}}
    assert report["int8"] is None and report["size_mb"] > 0  # the technique's entries cannot overwrite these
    saved = json.loads((tmp_path / "onnx" / "export_report.json").read_text())
    assert saved["techniques"] == report["techniques"]
    card = (tmp_path / "onnx" / "README.md").read_text()
    assert "- probe-3" in card and "## Probe at level 3" in card and "## Sparsity" not in card
    # the recipe's technique blocks are the run's when no techniques are given; none at all: every registered one
    Probe.calls.clear()
    recipe = Recipe(probe=ProbeConfig(5)).to_dict()
    report = export_model(model, tokenizer, tmp_path / "again", ExportConfig(), recipe=recipe)
    assert Probe.calls == [("prepare_for_export", ProbeConfig(5))] and list(report["techniques"]) == ["probe"]
    Probe.calls.clear()
    report = export_model(model, tokenizer, tmp_path / "unknown", ExportConfig())
    assert list(report["techniques"]) == [t.name for t in registered_techniques()]
    assert Probe.calls == [("prepare_for_export", None)]
    Probe.calls.clear()
    restore_saved(model, tmp_path, {"probe": ProbeConfig(7)})
    assert Probe.calls == [("restore_saved", ProbeConfig(7))]


def test_the_card_omits_a_technique_unknown_here():
    report = {
        "task": "token-classification",
        "int8": None,
        "size_mb": 1.0,
        "techniques": {"somewhere_else": {"level": 1}, "pruning": {"removed_structures": None, "sparsity": None}},
    }
    card = model_card(report)
    assert "somewhere_else" not in card and "pruned" not in card and "## Sparsity" not in card


# ------------------------------------------------------------------------------------------------ public homes
def test_callbacks_module_is_the_public_home_of_every_technique_callback():
    import hf_compress.callbacks as callbacks

    builtin = [t for t in registered_techniques() if t.__module__.startswith("hf_compress.")]
    assert {t.__name__ for t in builtin} == {
        "DistillationCallback",
        "GradualPruningCallback",
        "LowRankCallback",
        "QATCallback",
    }
    for technique in builtin:
        assert technique.__name__ in callbacks.__all__ and getattr(callbacks, technique.__name__) is technique
    from hf_compress.callbacks import GradualPruningCallback  # the documented import

    assert GradualPruningCallback(final_sparsity=0.5, start_step=0, end_step=4).config.final_sparsity == 0.5


def test_student_steps_run_by_model_student_key(monkeypatch):
    from hf_compress.pruning.width_step import narrow_student_step
    from hf_compress.vocabulary import trim_student_vocabulary

    # registered by the pruning and vocabulary packages
    assert student_steps() == {"width": narrow_student_step, "vocabulary": trim_student_vocabulary}
    seen = []
    monkeypatch.setitem(student_steps.__globals__["_STUDENT_STEPS"], "vocabulary", lambda d, c: seen.append((d, c)))
    draft = StudentDraft(model=None, tokenizer=None, texts=lambda split: [], output_dir="out")
    assert prepare_student(draft, StudentConfig(name_or_path="s")) == [] and seen == []
    config = StudentConfig(name_or_path="s", vocabulary=VocabularyConfig(min_count=2))
    assert prepare_student(draft, config) == ["vocabulary"] and seen == [(draft, VocabularyConfig(min_count=2))]
    with pytest.raises(ValueError, match="'pruning' is not a key of model.student"):
        register_student_step("pruning", lambda d, c: None)
    with pytest.raises(ValueError, match="model.student.vocabulary already has the step"):
        register_student_step("vocabulary", lambda d, c: None)
