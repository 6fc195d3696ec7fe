"""The header of a GGUF file (llama.cpp's format): its metadata, and its tensors as numpy views of the mapped file.

A GGUF file is: magic "GGUF", version, tensor count, metadata count; then each metadata entry as a key string, a
value type and a value (a scalar, a string, or a typed array); then each tensor's name, dims (innermost first),
ggml type and offset into the data section, which starts at the next multiple of general.alignment (default 32).

We parse it here instead of with gguf.GGUFReader, which builds a numpy view of every array element: for
Qwen2.5-Coder's 151,936 tokens and 151,387 merges that took ~9 s of a 25 s load, against 0.4 s here. The gguf
package still gives the block sizes of the quantized types and their dequantization.
"""
import math
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SCALAR_FORMATS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
STRING, ARRAY = 8, 9
F32, F16 = 0, 1   # ggml types stored as plain values; every other type is stored in blocks
DEFAULT_ALIGNMENT = 32


@dataclass(frozen=True)
class GGUFTensor:
    name: str
    dims: tuple[int, ...]   # innermost first, as GGUF lists them (the reverse of torch's shape)
    ggml_type: int
    data: np.ndarray        # float32 / float16 values, or the raw blocks as uint8 rows (rows, bytes per row)

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
        if ggml_type in (F32, F16):
            dtype, shape = (np.float32 if ggml_type == F32 else np.float16), (n,)
        else:
            from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
            try:
                block_size, block_bytes = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
            except ValueError:
                raise ValueError(f"{self.path}: tensor {name} has unknown ggml type {ggml_type}") from None
            dtype, shape = np.uint8, (n // dims[0], dims[0] // block_size * block_bytes)
        count = math.prod(shape)
        end = offset + count * np.dtype(dtype).itemsize
        if end > len(self._buffer):
            raise ValueError(f"{self.path}: tensor {name} ends at byte {end} of a "
                             f"{len(self._buffer)}-byte file (a truncated file?)")
        data = np.frombuffer(self._buffer, dtype=dtype, count=count, offset=offset).reshape(shape)
        return GGUFTensor(name, dims, ggml_type, data)
