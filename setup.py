"""Build hook: a built package carries the repository's recipes and the quickstart's sample data.

``recipes/*.yaml`` and ``examples/data/conll-sample/`` are copied into ``hf_compress/_shipped/`` of the build, laid
out as in the repository (a recipe's relative paths name the same files), so ``hf-compress train quickstart-ner``
works after a plain ``pip install``. The repository keeps the only copy; an editable install reads it in place
(``hf_compress.recipes``). Everything else is in pyproject.toml.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
#: Folder of the repository -> glob of the files the package ships from it.
SHIPPED = {"recipes": "*.yaml", "examples/data/conll-sample": "*"}
SHIPPED_PACKAGE_DIR = Path("hf_compress", "_shipped")


def copy_shipped_files(root: Path, target: Path) -> list[Path]:
    """Copy the shipped files from the repository at ``root`` into ``target``; the files written."""
    written = []
    for folder, pattern in SHIPPED.items():
        sources = sorted(path for path in (root / folder).glob(pattern) if path.is_file())
        if not sources:
            raise FileNotFoundError(f"nothing to ship in {root / folder} ({pattern})")
        for source in sources:
            destination = target / folder / source.name
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, destination)
            written.append(destination)
    return written


class BuildPyWithRecipes(build_py):
    """``build_py``, plus the shipped recipes and sample data (not for an editable install)."""

    def run(self):
        super().run()
        if not getattr(self, "editable_mode", False):
            copy_shipped_files(ROOT, Path(self.build_lib) / SHIPPED_PACKAGE_DIR)


if __name__ == "__main__":
    setup(cmdclass={"build_py": BuildPyWithRecipes})
