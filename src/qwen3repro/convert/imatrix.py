"""The importance matrix file, as llama-imatrix writes it and llama-quantize reads it.

Per weight matrix that multiplies activations (every `blk.*` matrix; llama-imatrix leaves the
output matrix out by default), per input column: the sum over calibration tokens of the squared
activation that column multiplies, and the token count. The GGUF form (llama.cpp's default since
2025) stores `<name>.in_sum2` (F32, [n_mat, n_cols]) and `<name>.counts` (F32, [n_mat, 1]) with
`imatrix.datasets`, `imatrix.chunk_count` and `imatrix.chunk_size`; the legacy `.dat` form stores
per entry the mean times the number of chunks, and the chunk count. llama-quantize weighs column j
of a matrix by in_sum2[j] / count (legacy: value / chunks), in float32.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import gguf
import numpy as np

from qwen3repro.errors import UserError
from qwen3repro.fsutil import staged_file
from qwen3repro.gguf_file import GGUFFile

F32 = np.float32
SUMS, COUNTS = ".in_sum2", ".counts"


@dataclass
class ImportanceMatrix:
    sums: dict[str, np.ndarray] = field(default_factory=dict)  # name -> float32 [n_mat, n_cols]
    counts: dict[str, np.ndarray] = field(default_factory=dict)  # name -> float32 [n_mat]
    datasets: list[str] = field(default_factory=list)
    chunk_count: int = 0
    chunk_size: int = 0
    legacy: bool = False  # read from a .dat file: sums hold mean * chunks, counts the chunks

    def add_squares(self, name: str, squares: np.ndarray, tokens: int) -> None:
        """Count `tokens` inputs of matrix `name` whose squares summed per column are `squares`."""
        if name not in self.sums:
            self.sums[name] = np.zeros((1, squares.shape[0]), F32)
            self.counts[name] = np.zeros(1, F32)
        self.sums[name][0] += squares
        self.counts[name][0] += tokens

    def importance(self, name: str) -> np.ndarray:
        """The weights llama-quantize gives the columns of `name`: [n_mat * n_cols] float32."""
        sums, counts = self.sums[name], self.counts[name]
        if self.legacy:
            return (sums / counts[0] if counts[0] > 0 else sums).reshape(-1).astype(F32)
        counts = np.round(counts).astype(F32)[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(counts > 0, sums / counts, F32(1)).reshape(-1).astype(F32)

    def write(self, path: Path | str, force: bool = False) -> None:
        """The GGUF form, entries sorted by name as llama-imatrix sorts them."""
        with staged_file(Path(path), force) as tmp:
            writer = gguf.GGUFWriter(tmp, arch="imatrix")
            writer.kv_data[0].pop("general.architecture")  # llama-imatrix writes only general.type
            writer.add_type("imatrix")
            writer.add_array("imatrix.datasets", list(self.datasets))
            writer.add_uint32("imatrix.chunk_count", self.chunk_count)
            writer.add_uint32("imatrix.chunk_size", self.chunk_size)
            for name in sorted(self.sums):
                writer.add_tensor(name + SUMS, np.ascontiguousarray(self.sums[name], F32))
                writer.add_tensor(name + COUNTS, np.ascontiguousarray(self.counts[name], F32).reshape(-1, 1))
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
            writer.close()

    def write_dat(self, path: Path | str, force: bool = False) -> None:
        """The legacy form, as llama-imatrix --output-format dat writes it."""
        out = bytearray(struct.pack("<i", len(self.sums)))
        for name in sorted(self.sums):
            chunks = max(1, -(-int(self.counts[name].max()) // max(1, self.chunk_size)))
            counts = self.counts[name][:, None]
            values = np.where(counts == 0, F32(1), self.sums[name] / np.where(counts == 0, F32(1), counts))
            encoded = name.encode()
            out += struct.pack("<i", len(encoded)) + encoded + struct.pack("<ii", chunks, values.size)
            out += (values * F32(chunks)).astype("<f4").tobytes()
        dataset = (self.datasets[-1] if self.datasets else "").encode()
        out += struct.pack("<ii", self.chunk_count, len(dataset)) + dataset
        with staged_file(Path(path), force) as tmp:
            tmp.write_bytes(bytes(out))

    def check_against(self, path: Path | str, shapes: dict[str, tuple[int, ...]]) -> list[str]:
        """Refuse a matrix made for another model (an entry naming no tensor of this one, or
        another width); return the model's block matrices it has no entry for."""
        for name, sums in self.sums.items():
            if name not in shapes:
                raise UserError(
                    f"{path}: importance matrix entry {name} is not a tensor of this model (another model?)"
                )
            if sums.size != shapes[name][-1]:
                raise UserError(
                    f"{path}: importance matrix entry {name} has {sums.size} columns, the tensor {shapes[name][-1]} "
                    "(another model?)"
                )
            if not np.isfinite(sums).all():
                raise UserError(f"{path}: importance matrix entry {name} holds non-finite values")
        return [n for n, s in shapes.items() if n.startswith("blk.") and len(s) == 2 and n not in self.sums]


def read(path: Path | str) -> ImportanceMatrix:
    """An importance matrix file in either form; any malformation is a one-line UserError."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise UserError(f"{path}: cannot read the importance matrix ({e.strerror})") from None
    matrix = _read_gguf(path) if magic == b"GGUF" else _read_dat(path)
    if not matrix.sums:
        raise UserError(f"{path}: the importance matrix has no entries")
    return matrix


def _read_gguf(path: Path) -> ImportanceMatrix:
    with GGUFFile(path) as f:
        fields = f.fields
        if fields.get("general.type") != "imatrix" or "imatrix.chunk_size" not in fields:
            raise UserError(f"{path}: a GGUF file but not an importance matrix (no imatrix metadata)")
        matrix = ImportanceMatrix(
            datasets=list(fields.get("imatrix.datasets", [])),
            chunk_count=int(fields.get("imatrix.chunk_count", 0)),
            chunk_size=int(fields["imatrix.chunk_size"]),
        )
        names = {n[: -len(SUMS)] for n in f.tensors if n.endswith(SUMS)} | {
            n[: -len(COUNTS)] for n in f.tensors if n.endswith(COUNTS)
        }
        for name in sorted(names):
            sums, counts = f.tensors.get(name + SUMS), f.tensors.get(name + COUNTS)
            if sums is None or counts is None:
                raise UserError(f"{path}: entry {name} has sums without counts or counts without sums")
            if sums.type != gguf.GGMLQuantizationType.F32 or counts.type != gguf.GGMLQuantizationType.F32:
                raise UserError(f"{path}: entry {name}: sums and counts must be F32")
            n_mat = int(np.prod(counts.shape))
            if n_mat < 1 or int(np.prod(sums.shape)) % n_mat:
                raise UserError(f"{path}: entry {name}: {n_mat} counts do not divide its sums")
            matrix.sums[name] = f.raw(name + SUMS).view("<f4").reshape(n_mat, -1).astype(F32)
            matrix.counts[name] = f.raw(name + COUNTS).view("<f4").reshape(-1).astype(F32)
    return matrix


def _read_dat(path: Path) -> ImportanceMatrix:
    data = path.read_bytes()
    pos = 0

    def take(fmt: str):
        nonlocal pos
        size = struct.calcsize(fmt)
        if pos + size > len(data):
            raise UserError(f"{path}: not an importance matrix (truncated legacy .dat at byte {pos})")
        values = struct.unpack_from(fmt, data, pos)
        pos += size
        return values

    (n_entries,) = take("<i")
    if n_entries < 1 or n_entries > len(data) // 12:
        raise UserError(f"{path}: not an importance matrix (neither GGUF nor a legacy .dat with entries)")
    matrix = ImportanceMatrix(legacy=True)
    for _ in range(n_entries):
        (length,) = take("<i")
        if length < 1 or pos + length > len(data):
            raise UserError(f"{path}: not an importance matrix (bad name length {length} at byte {pos - 4})")
        name = data[pos : pos + length].decode("utf-8", "replace")
        pos += length
        ncall, nval = take("<ii")
        if nval < 1:
            raise UserError(f"{path}: entry {name} has {nval} values")
        values = np.array(take(f"<{nval}f"), F32)
        matrix.sums[name] = values.reshape(1, -1)
        matrix.counts[name] = np.array([ncall], F32)
    if pos + 4 <= len(data):
        (matrix.chunk_count,) = take("<i")
        if pos + 4 <= len(data):
            (length,) = take("<i")
            if 0 < length <= len(data) - pos:
                matrix.datasets.append(data[pos : pos + length].decode("utf-8", "replace"))
    return matrix
