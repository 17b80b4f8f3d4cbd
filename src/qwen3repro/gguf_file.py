"""Reads a GGUF file's metadata and tensor directory, checking every offset and size against the file.

Model files are untrusted input: every count, length and offset is checked against the file's size
before anything is read or mapped, and any violation is a one-line UserError. gguf-py's GGUFReader
builds a NumPy view per vocabulary entry (seconds for Qwen3's 455k); this reads the same format in
one pass and maps tensor data lazily. Types and block sizes come from gguf-py.
"""

from __future__ import annotations

import math
import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType

from qwen3repro.errors import UserError

GGUF_MAGIC = b"GGUF"
MAX_DIMS = 4
SCALARS = {
    GGUFValueType.UINT8: "<u1",
    GGUFValueType.INT8: "<i1",
    GGUFValueType.UINT16: "<u2",
    GGUFValueType.INT16: "<i2",
    GGUFValueType.UINT32: "<u4",
    GGUFValueType.INT32: "<i4",
    GGUFValueType.FLOAT32: "<f4",
    GGUFValueType.BOOL: "<u1",
    GGUFValueType.UINT64: "<u8",
    GGUFValueType.INT64: "<i8",
    GGUFValueType.FLOAT64: "<f8",
}


def tensor_nbytes(shape: tuple[int, ...], qtype: GGMLQuantizationType) -> int:
    """Bytes of a tensor of `shape` (row last, a whole number of blocks) stored as `qtype`; Python
    integers, so hostile dimensions cannot overflow."""
    block, type_size = GGML_QUANT_SIZES[qtype]
    n_rows = 1
    for d in shape[:-1]:
        n_rows *= int(d)
    return n_rows * (int(shape[-1]) // block) * type_size


@dataclass(frozen=True)
class TensorInfo:
    name: str
    type: GGMLQuantizationType
    shape: tuple[int, ...]  # NumPy order: the row (GGUF's ne[0]) last
    offset: int  # absolute, in the file
    nbytes: int

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)


class GGUFFile:
    """`fields` (key -> value; arrays as lists, or NumPy arrays for numbers) and `tensors` (name -> TensorInfo)."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        try:
            self._file = open(self.path, "rb")
        except OSError as e:
            raise UserError(f"{self.path}: cannot open ({e.strerror})") from None
        size = self.path.stat().st_size
        if size < 24:
            raise UserError(f"{self.path}: not a GGUF file (too short)")
        self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        self._pos = 0
        if self._take(4) != GGUF_MAGIC:
            raise UserError(f"{self.path}: not a GGUF file (bad magic)")
        version, n_tensors, n_kv = self._unpack("<IQQ")
        if version not in (2, 3):
            raise UserError(f"{self.path}: unsupported GGUF version {version}")
        # every KV pair and tensor info needs at least 8 + 4 bytes: a bound before any loop
        if (n_tensors + n_kv) * 12 > size:
            raise UserError(f"{self.path}: truncated or corrupt (counts {n_tensors} tensors, {n_kv} keys)")
        self.fields = {}
        for _ in range(n_kv):
            key = self._string()
            self.fields[key] = self._value(GGUFValueType(self._checked_type(*self._unpack("<I"))))
        infos = [self._tensor_info() for _ in range(n_tensors)]
        alignment = self.fields.get("general.alignment", 32)
        if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
            raise UserError(f"{self.path}: general.alignment {alignment!r} is not a power of two")
        data_start = -(-self._pos // alignment) * alignment
        self.tensors: dict[str, TensorInfo] = {}
        spans = []
        for name, shape, qtype, rel in infos:
            if name in self.tensors:
                raise UserError(f"{self.path}: duplicate tensor {name}")
            if shape[-1] % GGML_QUANT_SIZES[qtype][0]:
                raise UserError(f"{self.path}: tensor {name}: row of {shape[-1]} is not whole {qtype.name} blocks")
            nbytes = tensor_nbytes(shape, qtype)
            start = data_start + rel
            if rel % alignment or start + nbytes > size:
                raise UserError(f"{self.path}: tensor {name} lies outside the file (truncated?)")
            self.tensors[name] = TensorInfo(name, qtype, shape, start, nbytes)
            spans.append((start, start + nbytes, name))
        spans.sort()
        for (_, end, a), (start, _, b) in zip(spans, spans[1:]):
            if start < end:
                raise UserError(f"{self.path}: tensors {a} and {b} overlap")

    # ------------------------------------------------------------------ parsing
    def _take(self, n: int) -> bytes:
        if n < 0 or self._pos + n > len(self._map):
            raise UserError(f"{self.path}: truncated or corrupt (read past the end at byte {self._pos})")
        chunk = self._map[self._pos : self._pos + n]
        self._pos += n
        return chunk

    def _unpack(self, fmt: str):
        return struct.unpack(fmt, self._take(struct.calcsize(fmt)))

    def _string(self) -> str:
        (n,) = self._unpack("<Q")
        try:
            return self._take(n).decode("utf-8")
        except UnicodeDecodeError:
            raise UserError(f"{self.path}: invalid UTF-8 in a string at byte {self._pos}") from None

    def _checked_type(self, value_type: int) -> int:
        if value_type not in GGUFValueType._value2member_map_:
            raise UserError(f"{self.path}: unknown metadata value type {value_type} at byte {self._pos}")
        return value_type

    def _value(self, vtype: GGUFValueType):
        if vtype in SCALARS:
            value = np.frombuffer(self._take(np.dtype(SCALARS[vtype]).itemsize), SCALARS[vtype])[0]
            return bool(value) if vtype == GGUFValueType.BOOL else value.item()
        if vtype == GGUFValueType.STRING:
            return self._string()
        item_type, n = self._unpack("<IQ")
        item_type = GGUFValueType(self._checked_type(item_type))
        if item_type in SCALARS:
            dtype = np.dtype(SCALARS[item_type])
            return np.frombuffer(self._take(n * dtype.itemsize), dtype).copy()
        if item_type == GGUFValueType.STRING:
            if n * 8 > len(self._map) - self._pos:
                raise UserError(f"{self.path}: truncated or corrupt (array of {n} strings)")
            return [self._string() for _ in range(n)]
        raise UserError(f"{self.path}: nested metadata arrays are not supported")

    def _tensor_info(self):
        name = self._string()
        (n_dims,) = self._unpack("<I")
        if not 1 <= n_dims <= MAX_DIMS:
            raise UserError(f"{self.path}: tensor {name} has {n_dims} dimensions")
        dims = self._unpack(f"<{n_dims}Q")
        qtype_id, rel = self._unpack("<IQ")
        if qtype_id not in GGMLQuantizationType._value2member_map_ or qtype_id not in GGML_QUANT_SIZES:
            raise UserError(f"{self.path}: tensor {name} has unknown type {qtype_id}")
        if any(d == 0 or d > 1 << 40 for d in dims):
            raise UserError(f"{self.path}: tensor {name} has dimensions {list(dims)}")
        return name, tuple(reversed(dims)), GGMLQuantizationType(qtype_id), rel

    # ------------------------------------------------------------------ data
    def raw(self, name: str) -> np.ndarray:
        """The tensor's bytes as a read-only uint8 view of the mapped file."""
        info = self.tensors[name]
        return np.frombuffer(self._map, np.uint8, info.nbytes, info.offset)

    @property
    def mapping(self) -> mmap.mmap:
        return self._map

    def read_rows(self, name: str, first: int, last: int) -> np.ndarray:
        """Rows first..last-1 of a tensor, as bytes [rows, bytes per row], read with pread rather
        than through the mapping, so the pages are not counted in this process's memory."""
        info = self.tensors[name]
        n_rows = info.nbytes // (tensor_nbytes(info.shape[-1:], info.type))
        if not 0 <= first < last <= n_rows:
            raise ValueError(f"rows {first}..{last} of {name} with {n_rows} rows")
        row_bytes = info.nbytes // n_rows
        data = os.pread(self._file.fileno(), (last - first) * row_bytes, info.offset + first * row_bytes)
        if len(data) != (last - first) * row_bytes:
            raise UserError(f"{self.path}: file shrank while reading {name}")
        return np.frombuffer(data, np.uint8).reshape(last - first, row_bytes)

    def close(self) -> None:
        try:
            self._map.close()
        except BufferError:  # arrays from raw() still use the mapping; it closes when they go
            pass
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
