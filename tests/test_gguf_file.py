"""gguf_file.GGUFFile against the gguf package's reader on a real file, on a hand-built file of every value type,
and on broken files; gguf_file.dequantize against the gguf package's decoder and on hand-worked blocks."""
import struct
import sys

import numpy as np
import pytest
import torch

import gguf_file
from gguf_file import GGUFFile, GGUFTensor


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


# Dequantization. The oracle is the gguf package's numpy decoder; the hand-worked blocks do without it.

def random_blocks(ggml_type: int, n: int = 64) -> np.ndarray:
    """n random blocks of a type, with finite fp16 scales where the type keeps them."""
    _, _, block_bytes, _ = gguf_file.BLOCK_TYPES[ggml_type]
    blocks = np.random.default_rng(ggml_type).integers(0, 256, (n, block_bytes), dtype=np.uint8)
    scale_at = {14: [208], 12: [0, 2], 13: [0, 2], 3: [0, 2], 7: [0, 2]}.get(ggml_type, [0])
    for at in scale_at:
        scales = np.random.default_rng(at).uniform(-2, 2, n).astype(np.float16)
        blocks[:, at:at + 2] = scales.view(np.uint8).reshape(n, 2)
    return blocks


@pytest.mark.parametrize("ggml_type", sorted(gguf_file.BLOCK_TYPES))
def test_every_block_type_dequantizes_as_the_gguf_package_does(ggml_type):
    gguf = pytest.importorskip("gguf")
    from gguf.quants import dequantize as theirs
    blocks = random_blocks(ggml_type)
    per_block = gguf_file.BLOCK_TYPES[ggml_type][1]
    rows = blocks.reshape(8, -1)   # 8 rows of 8 blocks each
    tensor = GGUFTensor("w", (8 * per_block, 8), ggml_type, rows)
    expected = theirs(rows, gguf.GGMLQuantizationType(ggml_type)).astype(np.float32)
    ours = gguf_file.dequantize(tensor)
    assert ours.shape == (8, 8 * per_block) and ours.dtype == torch.float32
    assert torch.equal(ours, torch.from_numpy(expected))   # bit for bit


def test_the_embedded_file_dequantizes_as_the_gguf_package_does(embedded_path):
    gguf = pytest.importorskip("gguf")
    from gguf.quants import dequantize as theirs
    file = GGUFFile(embedded_path)
    for name in ("token_embd.weight", "blk.0.ffn_down.weight", "blk.0.attn_norm.weight"):   # Q8_0, Q4_1, F32
        tensor = file.tensors[name]
        expected = theirs(tensor.data, gguf.GGMLQuantizationType(tensor.ggml_type)).astype(np.float32)
        assert torch.equal(gguf_file.dequantize(tensor), torch.from_numpy(expected).reshape(tensor.dims[::-1]))


def test_hand_worked_blocks():
    f16 = lambda value: np.array([value], dtype=np.float16).view(np.uint8)   # noqa: E731
    # Q4_0: d = 0.5; byte j holds value j (low nibble) and j + 16 (high): 3 -> (3 - 8) * 0.5, 12 -> (12 - 8) * 0.5
    q4_0 = np.concatenate([f16(0.5), np.full(16, 0xC3, np.uint8)])
    assert gguf_file.dequantize(GGUFTensor("a", (32, 1), 2, q4_0[None])).tolist() == [[-2.5] * 16 + [2.0] * 16]
    # Q5_0: as Q4_0 around 16, with value 17's fifth bit set (bit 17 of the uint32): value 17 is (0 + 16 - 16) * 2
    q5_0 = np.concatenate([f16(2.0), np.frombuffer(struct.pack("<I", 1 << 17), np.uint8), np.zeros(16, np.uint8)])
    assert gguf_file.dequantize(GGUFTensor("b", (32, 1), 6, q5_0[None]))[0, 15:19].tolist() == [-32, -32, 0, -32]
    # Q4_K: d = 1, dmin = 0.5; sub-block 5's 6-bit scale is byte 9's low nibble (3) topped by byte 1's two high
    # bits (0b01 -> 16): 19; its minimum byte 9's high nibble (2) topped by byte 5's (0b10 -> 32): 34. Sub-block 5's
    # quants are the high nibbles of bytes 64-95 of qs (7): 1 * 19 * 7 - 0.5 * 34 = 116.
    scales = np.zeros(12, np.uint8)
    scales[1], scales[5], scales[9] = 0b01 << 6, 0b10 << 6, 0x23
    q4_k = np.concatenate([f16(1.0), f16(0.5), scales, np.full(128, 0x70, np.uint8)])
    values = gguf_file.dequantize(GGUFTensor("c", (256, 1), 12, q4_k[None]))[0]
    assert values[160:192].tolist() == [116.0] * 32
    # Q6_K: value 70 (first half, third quarter, l = 6) takes the high nibble of ql byte 6 and bits 4-5 of qh byte
    # 6; its scale is number 4 (quarter 2 * 2 + 6 // 16). (15 | 3 << 4) - 32 = 31, times d 0.25 and scale -2.
    ql, qh, sc = np.zeros(128, np.uint8), np.zeros(64, np.uint8), np.zeros(16, np.int8)
    ql[6], qh[6], sc[4] = 0xF0, 0b11 << 4, -2
    q6_k = np.concatenate([ql, qh, sc.view(np.uint8), f16(0.25)])
    values = gguf_file.dequantize(GGUFTensor("d", (256, 1), 14, q6_k[None]))[0]
    assert values[70].item() == 0.25 * -2 * 31 and values[6].item() == 0.0   # value 6: (0 | 0) - 32, scale 0
    # BF16 is the upper half of a float32
    bf16 = np.array([0x3FC0, 0xC000], np.uint16)   # 1.5, -2
    assert gguf_file.dequantize(GGUFTensor("e", (2,), gguf_file.BF16, bf16)).tolist() == [1.5, -2.0]


def test_a_type_we_do_not_decode_names_the_gguf_package(tmp_path, monkeypatch):
    contents = hand_built()[0].replace(tensor_info("q", (32, 2), 8, 128), tensor_info("q", (256, 2), 10, 128))
    path = tmp_path / "q2_k.gguf"
    path.write_bytes(contents)
    monkeypatch.setitem(sys.modules, "gguf", None)   # as if it were not installed
    with pytest.raises(ValueError, match=r"ggml type 10, which we do not decode \(ours: Q4_0.*pip install gguf"):
        GGUFFile(path)


def test_rows_that_are_not_whole_blocks_are_an_error(tmp_path):
    path = tmp_path / "ragged.gguf"
    path.write_bytes(hand_built()[0].replace(tensor_info("q", (32, 2), 8, 128), tensor_info("q", (16, 4), 8, 128)))
    with pytest.raises(ValueError, match="tensor q has rows of 16 values, not whole blocks of 32"):
        GGUFFile(path)


def test_the_embedded_model_loads_without_the_gguf_package(embedded_path, embedded, monkeypatch):
    from checkpoints import load_model
    monkeypatch.setitem(sys.modules, "gguf", None)
    model = load_model(embedded_path, device="cpu", dtype=torch.float32)
    reference = dict(embedded[0].named_parameters())
    assert all(torch.equal(p, reference[name]) for name, p in model.named_parameters())
