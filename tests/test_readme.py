"""The README's set-up commands are the ones CI and the quickstart recipe rely on."""

import re
import subprocess
import sys
from pathlib import Path

from hf_compress import Recipe
from hf_compress.tasks.token_classification import read_conll

ROOT = Path(__file__).resolve().parents[1]


def _bash_blocks(text: str) -> list[str]:
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_ci_runs_the_readme_test_command():
    readme_blocks = _bash_blocks((ROOT / "README.md").read_text())
    test_command = next(block for block in readme_blocks if "pytest" in block)
    install_and_test = test_command.split("&&", 2)[-1].strip()  # after creating and activating the venv
    assert install_and_test in (ROOT / ".ci" / "run").read_text()


def test_quickstart_command_uses_the_shipped_recipe_and_sample():
    blocks = _bash_blocks((ROOT / "README.md").read_text())
    quickstart = next(block for block in blocks if "hf-compress train" in block)
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
