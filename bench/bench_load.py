"""Loading a GGUF file: our dequantization (gguf_file.dequantize, whole-tensor torch operations) against the gguf
package's numpy decoder on every tensor of the file, then load_model end to end.

    python bench/bench_load.py                                   # the embedded Qwen2.5-Coder-0.5B
    python bench/bench_load.py --model qwen2.5-coder-1.5b --repeats 3

Each repeat decodes the whole file with each decoder in turn (ours first, then gguf's), so both see the same
machine; the table gives the median seconds and the ratio. Both decoders produce the same floats (tested in
tests/test_gguf_file.py); here the first tensor of each type is checked again.
"""

import argparse
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from checkpoints import load_model  # noqa: E402
from embedded import resolve_checkpoint  # noqa: E402
from gguf_file import BLOCK_TYPES, GGUFFile, dequantize  # noqa: E402


def theirs(tensor) -> torch.Tensor:
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize as gguf_dequantize
    values = gguf_dequantize(tensor.data, GGMLQuantizationType(tensor.ggml_type)).astype(np.float32)
    return torch.from_numpy(values).reshape(tensor.dims[::-1])


def decode_all(decode, tensors) -> float:
    start = time.perf_counter()
    for tensor in tensors:
        decode(tensor)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="qwen2.5-coder-0.5b", help="an embedded model's name or a .gguf path")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    path = resolve_checkpoint(args.model)
    tensors = list(GGUFFile(path).tensors.values())
    names = {**{kind: entry[0] for kind, entry in BLOCK_TYPES.items()}, 0: "F32", 1: "F16", 30: "BF16"}
    kinds = Counter(names.get(t.ggml_type, f"type {t.ggml_type}") for t in tensors)
    print(f"{path.name}: {len(tensors)} tensors ({', '.join(f'{n} {k}' for k, n in kinds.most_common())}), "
          f"{sum(t.n_elements for t in tensors) / 1e6:.0f}M values, torch threads {torch.get_num_threads()}")
    checked = {}
    for tensor in tensors:
        checked.setdefault(tensor.ggml_type, tensor)
    assert all(torch.equal(dequantize(t), theirs(t)) for t in checked.values()), "the decoders disagree"

    times = {"ours": [], "gguf": []}
    for _ in range(args.repeats):
        times["ours"].append(decode_all(dequantize, tensors))
        times["gguf"].append(decode_all(theirs, tensors))
    ours, gguf = (statistics.median(times[k]) for k in ("ours", "gguf"))
    print(f"dequantize every tensor: ours {ours:.2f} s, gguf {gguf:.2f} s: {gguf / ours:.1f}x faster "
          f"(median of {args.repeats})")
    for dtype in (torch.bfloat16, torch.float32):
        start = time.perf_counter()
        load_model(path, device="cpu", dtype=dtype)
        print(f"load_model {str(dtype).removeprefix('torch.')}: {time.perf_counter() - start:.2f} s "
              "(header, dequantization, copy into the layout decoding reads)")


if __name__ == "__main__":
    main()
