"""The header of a GGUF file (llama.cpp's format): its metadata, and its tensors as numpy views of the mapped file.

A GGUF file is: magic "GGUF", version, tensor count, metadata count; then each metadata entry as a key string, a
value type and a value (a scalar, a string, or a typed array); then each tensor's name, dims (innermost first),
ggml type and offset into the data section, which starts at the next multiple of general.alignment (default 32).

We parse it here instead of with gguf.GGUFReader, which builds a numpy view of every array element: for
Qwen2.5-Coder's 151,936 tokens and 151,387 merges that took ~9 s of a 25 s load, against 0.4 s here.

dequantize() turns a tensor's blocks into float32 with whole-tensor torch operations, for the block types that
llama.cpp's usual quantizations (Q4_0 ... Q8_0, Q4_K_M, Q5_K_M, Q6_K) are made of. Each block holds 32 or 256
values as small integers and one or more fp16 scales (K-quants: a scale and a minimum per 32-value sub-block,
themselves quantized to 6 bits). The rarer types (Q2_K, Q3_K, the IQ types) go through the gguf package when it is
installed.
"""
import math
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

SCALAR_FORMATS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
STRING, ARRAY = 8, 9
F32, F16, BF16 = 0, 1, 30   # ggml types stored as plain values; every other type is stored in blocks
DEFAULT_ALIGNMENT = 32


@dataclass(frozen=True)
class GGUFTensor:
    name: str
    dims: tuple[int, ...]   # innermost first, as GGUF lists them (the reverse of torch's shape)
    ggml_type: int
    data: np.ndarray        # float32 / float16 / bf16 (as uint16) values, or the blocks as uint8 (rows, row bytes)

    @property
    def n_elements(self) -> int:
        return math.prod(self.dims)


class GGUFFile:
    """metadata: key -> value (str, int, float, bool, or a list of them); tensors: name -> GGUFTensor."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        with open(path, "rb") as f:
            self._buffer = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if Path(path).stat().st_size else b""
        self._pos = 0
        try:
            self._parse()
        except struct.error:
            raise ValueError(f"{self.path}: the GGUF header ends early (a truncated file?)") from None

    def _parse(self):
        magic, version = self._unpack("<4sI")
        if magic != b"GGUF":
            raise ValueError(f"{self.path}: not a GGUF file (it starts with {magic!r})")
        if version not in (2, 3):
            raise ValueError(f"{self.path}: GGUF version {version} is not supported (2 or 3)")
        n_tensors, n_entries = self._unpack("<QQ")
        self.metadata = {}
        for _ in range(n_entries):
            key = self._string()
            self.metadata[key] = self._value(self._unpack("<I")[0])
        infos = []
        for _ in range(n_tensors):
            name = self._string()
            dims = self._unpack(f"<{self._unpack('<I')[0]}Q")
            ggml_type, offset = self._unpack("<IQ")
            infos.append((name, dims, ggml_type, offset))
        alignment = self.metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        start = -(-self._pos // alignment) * alignment
        self.tensors = {name: self._tensor(name, dims, ggml_type, start + offset)
                        for name, dims, ggml_type, offset in infos}

    def _unpack(self, fmt: str) -> tuple:
        values = struct.unpack_from(fmt, self._buffer, self._pos)
        self._pos += struct.calcsize(fmt)
        return values

    def _string(self) -> str:
        (length,) = self._unpack("<Q")
        end = self._pos + length
        if end > len(self._buffer):
            raise struct.error("string past the end")
        text = self._buffer[self._pos:end].decode("utf-8")
        self._pos = end
        return text

    def _value(self, kind: int):
        if kind == STRING:
            return self._string()
        if kind == ARRAY:
            item_kind, count = self._unpack("<IQ")
            if item_kind in SCALAR_FORMATS:   # one read for the whole array (token types, scores)
                return list(self._unpack(f"<{count}{SCALAR_FORMATS[item_kind]}"))
            return [self._value(item_kind) for _ in range(count)]
        if kind in SCALAR_FORMATS:
            return self._unpack("<" + SCALAR_FORMATS[kind])[0]
        raise ValueError(f"{self.path}: unknown GGUF value type {kind} at byte {self._pos}")

    def _tensor(self, name: str, dims: tuple, ggml_type: int, offset: int) -> GGUFTensor:
        n = math.prod(dims)
        if ggml_type in PLAIN_TYPES:
            dtype, shape = PLAIN_TYPES[ggml_type], (n,)
        else:
            block_size, block_bytes = self._block_shape(name, ggml_type)
            if dims[0] % block_size:
                raise ValueError(f"{self.path}: tensor {name} has rows of {dims[0]} values, not whole blocks of "
                                 f"{block_size}")
            dtype, shape = np.uint8, (n // dims[0], dims[0] // block_size * block_bytes)
        count = math.prod(shape)
        end = offset + count * np.dtype(dtype).itemsize
        if end > len(self._buffer):
            raise ValueError(f"{self.path}: tensor {name} ends at byte {end} of a "
                             f"{len(self._buffer)}-byte file (a truncated file?)")
        data = np.frombuffer(self._buffer, dtype=dtype, count=count, offset=offset).reshape(shape)
        return GGUFTensor(name, dims, ggml_type, data)

    def _block_shape(self, name: str, ggml_type: int) -> tuple[int, int]:
        """(values, bytes) of one block of a quantized type."""
        if ggml_type in BLOCK_TYPES:
            return BLOCK_TYPES[ggml_type][1:3]
        try:
            from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
        except ImportError:
            raise ValueError(f"{self.path}: tensor {name} has ggml type {ggml_type}, which we do not decode "
                             f"(ours: {', '.join(t[0] for t in BLOCK_TYPES.values())}); `pip install gguf` "
                             "reads the others") from None
        try:
            return GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
        except ValueError:
            raise ValueError(f"{self.path}: tensor {name} has unknown ggml type {ggml_type}") from None


# ---------------------------------------------------------------------------------------------------------------
# Dequantization. Each decoder takes a tensor's blocks as a (blocks, bytes per block) uint8 tensor and returns the
# (blocks, values per block) float32 values, in the order the values appear in the row.

def dequantize(tensor: GGUFTensor) -> torch.Tensor:
    """A tensor's values as float32, in torch's shape (GGUF's dims reversed)."""
    shape = tensor.dims[::-1]
    if tensor.ggml_type == BF16:   # the upper half of a float32
        return (torch.from_numpy(tensor.data.astype(np.int32)) << 16).view(torch.float32).reshape(shape)
    if tensor.ggml_type in PLAIN_TYPES:
        return torch.from_numpy(tensor.data.astype(np.float32)).reshape(shape)
    if tensor.ggml_type not in BLOCK_TYPES:
        from gguf import GGMLQuantizationType
        from gguf.quants import dequantize as theirs
        return torch.from_numpy(theirs(tensor.data, GGMLQuantizationType(tensor.ggml_type))).float().reshape(shape)
    _, _, block_bytes, decode = BLOCK_TYPES[tensor.ggml_type]
    blocks = torch.from_numpy(tensor.data.reshape(-1, block_bytes).copy())   # a copy: the mapped file is read-only
    return decode(blocks).reshape(shape)


def _f16(blocks: torch.Tensor, at: int) -> torch.Tensor:
    """The fp16 scale at byte `at` of every block, as a (blocks, 1) float32 column."""
    return blocks[:, at:at + 2].contiguous().view(torch.float16).float()


def _nibbles(packed: torch.Tensor) -> torch.Tensor:
    """32-value blocks keep values j and j+16 in the low and high nibble of byte j."""
    return torch.cat([packed & 0xF, packed >> 4], dim=1)


def _fifth_bits(blocks: torch.Tensor, at: int) -> torch.Tensor:
    """Q5_0/Q5_1: bit j of the little-endian uint32 at byte `at` is the fifth bit (16) of value j."""
    bits = (blocks[:, at:at + 4, None] >> torch.arange(8, dtype=torch.uint8)) & 1
    return bits.reshape(-1, 32) << 4


# The values are made float once and then scaled in place: on a 136M-value embedding that is 0.6 s against 1.0 s.

def _q4_0(b):
    return _nibbles(b[:, 2:]).float().sub_(8).mul_(_f16(b, 0))


def _q4_1(b):
    return _nibbles(b[:, 4:]).float().mul_(_f16(b, 0)).add_(_f16(b, 2))


def _q5_0(b):
    return (_nibbles(b[:, 6:]) | _fifth_bits(b, 2)).float().sub_(16).mul_(_f16(b, 0))


def _q5_1(b):
    return (_nibbles(b[:, 8:]) | _fifth_bits(b, 4)).float().mul_(_f16(b, 0)).add_(_f16(b, 2))


def _q8_0(b):
    return b[:, 2:].contiguous().view(torch.int8).float().mul_(_f16(b, 0))


def _k_scales(packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Q4_K/Q5_K: 8 scales and 8 minimums of 6 bits in 12 bytes. Sub-blocks 0-3 keep theirs in the low 6 bits of
    bytes 0-3 (scales) and 4-7 (minimums); sub-blocks 4-7 in the nibbles of bytes 8-11, topped by the two spare
    high bits of bytes 0-3 and 4-7."""
    low, high, rest = packed[:, 0:4], packed[:, 4:8], packed[:, 8:12]
    scales = torch.cat([low & 63, (rest & 0xF) | ((low >> 6) << 4)], dim=1)
    minimums = torch.cat([high & 63, (rest >> 4) | ((high >> 6) << 4)], dim=1)
    return scales.float(), minimums.float()


def _k_quant(b, quants: torch.Tensor):
    """Value = d * scale * q - dmin * minimum, per sub-block of 32."""
    scales, minimums = _k_scales(b[:, 4:16])
    return quants.float().mul_((_f16(b, 0) * scales)[:, :, None]).sub_((_f16(b, 2) * minimums)[:, :, None])


def _k_nibbles(qs: torch.Tensor) -> torch.Tensor:
    """Q4_K/Q5_K: each 32 bytes hold two sub-blocks, the earlier one in the low nibbles: (blocks, 8, 32)."""
    qs = qs.reshape(-1, 4, 1, 32)
    return torch.cat([qs & 0xF, qs >> 4], dim=2).reshape(-1, 8, 32)


def _q4_k(b):
    return _k_quant(b, _k_nibbles(b[:, 16:144])).reshape(-1, 256)


def _q5_k(b):
    # bit s of byte l of qh is the fifth bit (16) of value l of sub-block s
    fifth = (b[:, 16:48, None] >> torch.arange(8, dtype=torch.uint8)) & 1
    return _k_quant(b, _k_nibbles(b[:, 48:176]) | (fifth.transpose(1, 2) << 4)).reshape(-1, 256)


def _q6_k(b):
    """256 values of 6 bits, in two halves of 128: the low 4 bits from 64 bytes of ql (values l and l+64 in byte l's
    nibbles, l+32 and l+96 in byte l+32's), the high 2 bits from 32 bytes of qh (value l + 32k in bits 2k, 2k+1 of
    byte l), minus 32; times d and an int8 scale per 16 values."""
    ql, qh = b[:, :128].reshape(-1, 2, 2, 32), b[:, 128:192].reshape(-1, 2, 1, 32)
    low = torch.cat([ql & 0xF, ql >> 4], dim=2)                                   # (blocks, half, 4, 32)
    high = (qh >> torch.arange(0, 8, 2, dtype=torch.uint8)[:, None]) & 3
    quants = (low | (high << 4)).float().sub_(32).reshape(-1, 2, 4, 2, 16)
    scales = b[:, 192:208].contiguous().view(torch.int8).float().reshape(-1, 2, 4, 2, 1)
    return quants.mul_(_f16(b, 208)[:, :, None, None, None] * scales).reshape(-1, 256)


PLAIN_TYPES = {F32: np.float32, F16: np.float16, BF16: np.uint16}
BLOCK_TYPES = {   # ggml type: (name, values per block, bytes per block, decoder)
    2: ("Q4_0", 32, 18, _q4_0), 3: ("Q4_1", 32, 20, _q4_1), 6: ("Q5_0", 32, 22, _q5_0), 7: ("Q5_1", 32, 24, _q5_1),
    8: ("Q8_0", 32, 34, _q8_0), 12: ("Q4_K", 256, 144, _q4_k), 13: ("Q5_K", 256, 176, _q5_k),
    14: ("Q6_K", 256, 210, _q6_k)}
