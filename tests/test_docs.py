"""The documentation: a short README, links that point at files, and the pages generated from the code."""

from __future__ import annotations

import dataclasses
import importlib.util
import re
from pathlib import Path
from typing import Literal

import pytest
import yaml

import hf_compress.technique as technique_module
from hf_compress.checks import checked, count, number, text
from hf_compress.cli import build_parser
from hf_compress.technique import Technique, registered_techniques

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))


def _hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", DOCS / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hooks = _hooks()


def _links(markdown: str) -> list[str]:
    """The targets of the Markdown links and images of a page, outside code blocks and code spans."""
    markdown = re.sub(r"^```.*?^```", "", markdown, flags=re.S | re.M)
    markdown = re.sub(r"`[^`\n]*`", "", markdown)
    return re.findall(r"!?\[[^\]]*\]\(([^)\s]+)\)", markdown)


def test_the_readme_is_short():
    assert (ROOT / "README.md").stat().st_size <= 12 * 1024


@pytest.mark.parametrize("page", [ROOT / "README.md", *PAGES], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_at_a_file(page):
    for link in _links(page.read_text()):
        if re.match(r"^[a-z]+:", link) or link.startswith("#"):
            continue
        target = (page.parent / link.split("#", 1)[0]).resolve()
        assert target.exists(), f"{page.relative_to(ROOT)}: {link} -> {target} does not exist"


def test_the_link_pattern_finds_links():
    assert _links("[a](b.md) ![c](d.png#x) `[e](f.md)` [g](https://h)\n```\n[i](j.md)\n```\n") == [
        "b.md",
        "d.png#x",
        "https://h",
    ]


def test_the_plot_in_the_docs_is_the_benchmark_s():
    """The site cannot link outside docs/, so the benchmark plot is copied there: the copy must be current."""
    copied = (DOCS / "assets" / "bench_conll.png").read_bytes()
    assert copied == (ROOT / "benchmarks" / "results" / "bench_conll.png").read_bytes()


def test_every_page_is_in_the_navigation():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())

    def pages(nav) -> list[str]:
        found = []
        for entry in nav:
            for value in entry.values():
                found += pages(value) if isinstance(value, list) else [value]
        return found

    nav = pages(config["nav"])
    assert sorted(nav) == sorted(str(p.relative_to(DOCS)) for p in PAGES)


def test_the_readme_links_every_technique_page():
    readme = (ROOT / "README.md").read_text()
    for page in sorted((DOCS / "techniques").glob("*.md")):
        assert f"(docs/techniques/{page.name})" in readme, page.name


# ---------------------------------------------------------------------------------------------- generated pages
def test_every_field_of_every_block_is_described():
    """The recipe reference takes each field's meaning from its class docstring: none may be missing."""
    for name in ["model", "data", *(t.name for t in registered_techniques()), "export"]:
        rows = hooks.field_rows(hooks._block_class(name), name)
        assert rows, name
        for key, _, _, _, description in rows:
            assert description, f"{key} has no description in its class docstring's Attributes"


def test_the_reference_shows_type_default_and_declared_range():
    rows = {row[0]: row for row in hooks.field_rows(hooks._block_class("pruning"), "pruning")}
    assert rows["`pruning.final_sparsity`"][1:4] == ("float", "`0.5`", "a number in [0.0, 1.0)")
    assert rows["`pruning.structure`"][1:3] == ("`unstructured` or `neurons` or `heads` or `hidden`", "`unstructured`")
    assert rows["`pruning.update_every`"][3] == "an integer in [1, 2147483647]"
    assert rows["`pruning.targets`"][1:4] == ("list of str", "`null`", "a module-name pattern, not blank")
    assert rows["`pruning.end_step`"][4] == rows["`pruning.start_epoch`"][4]  # "start_epoch / ... / end_step:"
    model = [row[0] for row in hooks.field_rows(hooks._block_class("model"), "model")]
    assert "`model.student.vocabulary.keep_first_ids`" in model  # nested blocks are expanded


@checked
@dataclasses.dataclass
class _DropConfig:
    """Drop whole layers at random while training.

    Attributes:
        rate: the probability | of dropping a layer (see :func:`~somewhere.deep.drop_layers`).
        every: how often, in ``steps``.
        where: ``inside`` or ``outside``.
        tag: a label.

    Note:
        not an attribute.
    """

    rate: float = dataclasses.field(default=0.1, metadata=number(0.0, 1.0, high_open=True))
    every: int = dataclasses.field(default=2, metadata=count())
    where: Literal["inside", "outside"] = "inside"
    tag: str | None = dataclasses.field(default=None, metadata=text("a label"))


class _Drop(Technique):
    name = "droplayers"
    config_class = _DropConfig
    order = 15


def test_a_technique_from_outside_the_package_appears_in_the_reference(monkeypatch):
    """The reference iterates the registry: a technique registered by a plugin gets its section and table."""
    techniques = sorted([*registered_techniques(), _Drop], key=lambda cls: cls.order)  # as the registry sorts
    monkeypatch.setattr(technique_module, "registered_techniques", lambda: techniques)
    monkeypatch.setattr(technique_module, "get_technique", lambda name: {"droplayers": _Drop}.get(name))
    page = hooks.render("# Recipes\n\n<!-- hf-compress: recipe-reference -->\n", "recipes.md")
    headings = re.findall(r"^## `(\w+)`$", page, flags=re.M)
    assert headings == ["model", "data", *(t.name for t in techniques), "export", "training"]
    assert "droplayers" in headings
    section = page.split("## `droplayers`", 1)[1].split("\n## ", 1)[0]
    assert section.startswith(
        "\n\nDrop whole layers at random while training.\n\n"
        f"Technique `{_Drop.__module__}._Drop` (a plain callback; surgery order 15; checkpoint state "
        "`droplayers_state.pt`).\n\n| key | type | default | allowed | meaning |"
    ), section[:300]
    assert (
        "| `droplayers.rate` | float | `0.1` | a number in [0.0, 1.0) | the probability \\| of dropping a layer "
        "(see `drop_layers`). |" in section
    )
    assert "| `droplayers.every` | int | `2` | an integer in [1, 2147483647] | how often, in `steps`. |" in section
    assert "| `droplayers.where` | `inside` or `outside` | `inside` | as the type says |" in section
    assert "| `droplayers.tag` | str | `null` | a label, not blank | a label. |" in section
    assert "See [droplayers]" not in section  # no page of its own


def test_a_technique_page_links_nothing_to_itself_and_others_link_it():
    assert "See [pruning](techniques/pruning.md)." in hooks.recipe_block("pruning", "recipes.md")
    assert "See [pruning]" not in hooks.recipe_block("pruning", "techniques/pruning.md")


def test_an_unknown_marker_or_block_stops_the_build():
    with pytest.raises(ValueError, match="unknown marker"):
        hooks.render("<!-- hf-compress: recipe-refrence -->", "recipes.md")
    with pytest.raises(ValueError, match="no recipe block 'prunning'"):
        hooks.render("<!-- hf-compress: recipe-block prunning -->", "recipes.md")
    with pytest.raises(ValueError, match="has no block 'vocab'"):
        hooks.render("<!-- hf-compress: recipe-block model.student.vocab -->", "recipes.md")


def test_the_cli_page_has_every_command_and_option():
    page = hooks.render("<!-- hf-compress: cli -->", "cli.md")
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert re.findall(r"^## `hf-compress (\w[\w-]*)`$", page, flags=re.M) == list(commands)
    for name, command in commands.items():
        section = page.split(f"## `hf-compress {name}`", 1)[1].split("\n## ", 1)[0]
        for action in command._actions:
            for option in action.option_strings:
                assert option in section, (name, option)
    assert max(len(line) for line in page.splitlines()) <= 100  # wrapped at 100 columns, whatever the terminal
    usage = hooks.render("<!-- hf-compress: cli-usage -->", "cli.md").splitlines()
    assert [line.split()[1] for line in usage if line.startswith("hf-compress ")] == list(commands)
    assert usage[0] == "```text" and usage[-1] == "```" and not any("usage:" in line for line in usage)
