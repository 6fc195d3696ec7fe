"""gguf_file.GGUFFile against the gguf package's reader on a real file, on a hand-built file of every value type,
and on broken files."""
import struct

import numpy as np
import pytest

from gguf_file import GGUFFile


def test_the_embedded_file_reads_as_the_gguf_package_reads_it(embedded_path):
    gguf = pytest.importorskip("gguf")
    theirs = gguf.GGUFReader(embedded_path)
    ours = GGUFFile(embedded_path)
    # GGUFReader adds the header's counts as pseudo-fields named GGUF.*
    assert ours.metadata == {k: f.contents() for k, f in theirs.fields.items() if not k.startswith("GGUF.")}
    assert len(ours.metadata["tokenizer.ggml.tokens"]) == 49152
    assert list(ours.tensors) == [t.name for t in theirs.tensors]
    for tensor in theirs.tensors:
        mine = ours.tensors[tensor.name]
        assert mine.dims == tuple(int(n) for n in tensor.shape) and mine.ggml_type == int(tensor.tensor_type)
        assert mine.n_elements == tensor.n_elements
        assert mine.data.dtype == tensor.data.dtype and mine.data.shape == tensor.data.shape
        assert np.array_equal(mine.data, tensor.data)


def string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def entry(key: str, kind: int, value: bytes) -> bytes:
    return string(key) + struct.pack("<I", kind) + value


def tensor_info(name: str, dims: tuple, ggml_type: int, offset: int) -> bytes:
    return string(name) + struct.pack(f"<I{len(dims)}QIQ", len(dims), *dims, ggml_type, offset)


def hand_built(alignment: int | None = 64) -> tuple[bytes, dict]:
    """A version-3 file: one entry of each value type, arrays of ints, strings and arrays, and three tensors (f32
    2x3, f16 4, and q8_0 32x2, whose blocks are 2 bytes of f16 scale and 32 int8 values). With no alignment given,
    no general.alignment entry, and the layout of the default."""
    f32 = np.arange(6, dtype=np.float32)
    f16 = np.array([0.5, -1, 2, 4], dtype=np.float16)
    q8_0 = np.arange(2 * 34, dtype=np.uint8).reshape(2, 34)
    declared = [] if alignment is None else [entry("general.alignment", 4, struct.pack("<I", alignment))]
    alignment = alignment or 32
    entries = [*declared, entry("u8", 0, struct.pack("<B", 200)), entry("i8", 1, struct.pack("<b", -5)),
               entry("u16", 2, struct.pack("<H", 60000)), entry("i16", 3, struct.pack("<h", -300)),
               entry("i32", 5, struct.pack("<i", -7)), entry("f32", 6, struct.pack("<f", 0.25)),
               entry("bool", 7, struct.pack("<?", True)), entry("name", 8, string("naïve ✓")),
               entry("u64", 10, struct.pack("<Q", 2**40)), entry("i64", 11, struct.pack("<q", -2**40)),
               entry("f64", 12, struct.pack("<d", 1e-6)),
               entry("ints", 9, struct.pack("<IQ3i", 5, 3, 1, -2, 3)),
               entry("words", 9, struct.pack("<IQ", 8, 2) + string("Ġa") + string("b c")),
               entry("nested", 9, struct.pack("<IQ", 9, 2) + struct.pack("<IQ2B", 0, 2, 1, 2)
                     + struct.pack("<IQ", 8, 1) + string("x"))]
    blobs = [f32.tobytes(), f16.tobytes(), q8_0.tobytes()]
    offsets = [0, alignment, 2 * alignment]
    infos = [tensor_info("a", (3, 2), 0, offsets[0]), tensor_info("b", (4,), 1, offsets[1]),
             tensor_info("q", (32, 2), 8, offsets[2])]
    header = b"GGUF" + struct.pack("<IQQ", 3, len(infos), len(entries)) + b"".join(entries) + b"".join(infos)
    padding = bytes(-len(header) % alignment)   # the data section starts aligned
    section = bytearray()
    for offset, blob in zip(offsets, blobs):
        section += bytes(offset - len(section)) + blob
    return header + padding + bytes(section), {"a": f32, "b": f16, "q": q8_0}


def test_every_value_type_and_the_alignment_are_read(tmp_path):
    path = tmp_path / "hand.gguf"
    contents, arrays = hand_built()
    path.write_bytes(contents)
    file = GGUFFile(path)
    assert file.metadata == {"general.alignment": 64, "u8": 200, "i8": -5, "u16": 60000, "i16": -300, "i32": -7,
                             "f32": 0.25, "bool": True, "name": "naïve ✓", "u64": 2**40, "i64": -2**40, "f64": 1e-6,
                             "ints": [1, -2, 3], "words": ["Ġa", "b c"], "nested": [[1, 2], ["x"]]}
    a, b, q = (file.tensors[name] for name in "abq")
    assert (a.dims, a.ggml_type, a.n_elements, b.dims, q.dims) == ((3, 2), 0, 6, (4,), (32, 2))
    assert a.data.dtype == np.float32 and np.array_equal(a.data, arrays["a"])
    assert b.data.dtype == np.float16 and np.array_equal(b.data, arrays["b"])
    assert q.data.dtype == np.uint8 and np.array_equal(q.data, arrays["q"])   # blocks as rows, as dequantize takes


def test_the_default_alignment_is_32(tmp_path):
    path = tmp_path / "default.gguf"
    path.write_bytes(hand_built(alignment=None)[0])
    assert "general.alignment" not in GGUFFile(path).metadata
    assert np.array_equal(GGUFFile(path).tensors["b"].data, np.array([0.5, -1, 2, 4], dtype=np.float16))


@pytest.mark.parametrize("cut, message", [
    (lambda c: b"", "header ends early"),
    (lambda c: b"PK\x03\x04" + c[4:], "not a GGUF file"),
    (lambda c: c[:4] + struct.pack("<I", 7) + c[8:], "GGUF version 7 is not supported"),
    (lambda c: c[:100], "header ends early"),
    (lambda c: c[:-10], "tensor q ends at byte"),
    (lambda c: c.replace(tensor_info("b", (4,), 1, 64), tensor_info("b", (4,), 99, 64)), "unknown ggml type 99"),
])
def test_a_broken_file_is_a_value_error_that_names_it(tmp_path, cut, message):
    path = tmp_path / "broken.gguf"
    path.write_bytes(cut(hand_built()[0]))
    with pytest.raises(ValueError, match=message) as error:
        GGUFFile(path)
    assert str(path) in str(error.value)
