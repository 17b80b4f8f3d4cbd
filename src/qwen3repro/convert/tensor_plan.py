"""GGUF file types and the tensor type llama-quantize picks for each tensor of a Qwen3 model.

The rules are llama.cpp's `llama_tensor_get_type` (src/llama-quant.cpp) restricted to what a dense
Qwen3 can meet, with or without an importance matrix (a few mixes change with one): tensors are
visited in llama.cpp's loader order (layer by layer), so the attn_v / ffn_down counters equal the
layer index. A file quantized with an importance matrix is named like `Q4_K_M-imat`.
"""

from __future__ import annotations

from dataclasses import dataclass

from gguf import GGML_QUANT_SIZES
from gguf import GGMLQuantizationType as T
from gguf import LlamaFileType as FT

from qwen3repro.convert.quants import TAKES_IMATRIX
from qwen3repro.errors import UserError

# file type name -> (llama ftype written to general.file_type, default tensor type)
FILE_TYPES: dict[str, tuple[FT, T]] = {
    "F32": (FT.ALL_F32, T.F32),
    "F16": (FT.MOSTLY_F16, T.F16),
    "BF16": (FT.MOSTLY_BF16, T.BF16),
    "Q8_0": (FT.MOSTLY_Q8_0, T.Q8_0),
    "Q5_1": (FT.MOSTLY_Q5_1, T.Q5_1),
    "Q5_0": (FT.MOSTLY_Q5_0, T.Q5_0),
    "Q4_1": (FT.MOSTLY_Q4_1, T.Q4_1),
    "Q4_0": (FT.MOSTLY_Q4_0, T.Q4_0),
    "Q6_K": (FT.MOSTLY_Q6_K, T.Q6_K),
    "Q5_K_M": (FT.MOSTLY_Q5_K_M, T.Q5_K),
    "Q5_K_S": (FT.MOSTLY_Q5_K_S, T.Q5_K),
    "Q4_K_M": (FT.MOSTLY_Q4_K_M, T.Q4_K),
    "Q4_K_S": (FT.MOSTLY_Q4_K_S, T.Q4_K),
    "Q3_K_L": (FT.MOSTLY_Q3_K_L, T.Q3_K),
    "Q3_K_M": (FT.MOSTLY_Q3_K_M, T.Q3_K),
    "Q3_K_S": (FT.MOSTLY_Q3_K_S, T.Q3_K),
    "Q2_K": (FT.MOSTLY_Q2_K, T.Q2_K),
    "IQ4_NL": (FT.MOSTLY_IQ4_NL, T.IQ4_NL),
    "IQ4_XS": (FT.MOSTLY_IQ4_XS, T.IQ4_XS),
}
IMATRIX_SUFFIX = "-imat"
UNQUANTIZED = (T.F32, T.F16, T.BF16)
# llama.cpp's fallbacks when a row length is not a multiple of the type's block size
FALLBACK = {T.Q2_K: T.Q4_0, T.Q3_K: T.Q4_0, T.Q4_K: T.Q5_0, T.Q5_K: T.Q5_1, T.Q6_K: T.Q8_0, T.IQ4_XS: T.IQ4_NL}


def file_type(name: str) -> tuple[FT, T]:
    try:
        return FILE_TYPES[name.upper()]
    except KeyError:
        raise UserError(f"unknown file type {name!r}; supported: {', '.join(FILE_TYPES)}") from None


def split_variant(name: str) -> tuple[str, bool]:
    """'Q4_K_M-imat' -> ('Q4_K_M', True): the file type, and whether an importance matrix made it."""
    base = name[: -len(IMATRIX_SUFFIX)] if name.endswith(IMATRIX_SUFFIX) else name
    _, default = file_type(base)
    imatrix = base != name
    if imatrix and default not in TAKES_IMATRIX:
        raise UserError(f"file type {base} takes no importance matrix, so there is no {name}")
    return base.upper(), imatrix


def use_more_bits(i_layer: int, n_layers: int) -> bool:
    return i_layer < n_layers // 8 or i_layer >= 7 * n_layers // 8 or (i_layer - n_layers // 8) % 3 == 2


def block_size(qtype: T) -> int:
    return GGML_QUANT_SIZES[qtype][0]


@dataclass
class TensorPlan:
    """Chooses tensor types in llama.cpp's visiting order; one instance per output file."""

    ftype_name: str
    n_layers: int
    n_gqa: int
    tied_embeddings: bool
    has_imatrix: bool = False
    i_attention_wv: int = 0
    i_ffn_down: int = 0

    def __post_init__(self):
        self.ftype, self.default = file_type(self.ftype_name)
        self.requested: dict[str, T] = {}  # tensors stored at another type than the mix asks, and what it asked

    def choose(self, name: str, shape: tuple[int, ...]) -> T:
        """The type of GGUF tensor `name` whose numpy shape is `shape` (row length last)."""
        if len(shape) < 2 or not name.endswith("weight") or "_norm.weight" in name:
            return T.F32
        new = self.default
        if new in UNQUANTIZED:
            return new
        wanted = new = self._mixture(name, new)
        if self._is_output(name) and shape[-1] % block_size(self.default):
            new = T.Q8_0  # llama.cpp's output rule, before any fallback
        if shape[-1] % block_size(new):
            new = FALLBACK.get(new, new)
            if shape[-1] % block_size(new):
                new = T.F16
        if new != wanted:
            self.requested[name] = wanted
        return new

    def _is_output(self, name: str) -> bool:
        return name == "output.weight" or (self.tied_embeddings and name == "token_embd.weight")

    def _mixture(self, name: str, new: T) -> T:
        """The type the file type's mix asks for `name`, whatever its row length."""
        ft, FTs = self.ftype, FT
        if self._is_output(name):
            return new if new == T.Q8_0 else T.Q6_K
        if "attn_v.weight" in name:
            i, n = self.i_attention_wv, self.n_layers
            if ft == FTs.MOSTLY_Q2_K:
                new = T.Q4_K if self.n_gqa >= 4 else T.Q3_K
            elif ft == FTs.MOSTLY_Q3_K_M:
                new = T.Q5_K if i < 2 else T.Q4_K
            elif ft == FTs.MOSTLY_Q3_K_L:
                new = T.Q5_K
            elif ft in (FTs.MOSTLY_IQ4_NL, FTs.MOSTLY_IQ4_XS) and self.n_gqa >= 4:
                new = T.Q5_K
            elif ft in (FTs.MOSTLY_Q4_K_M, FTs.MOSTLY_Q5_K_M) and use_more_bits(i, n):
                new = T.Q6_K
            elif ft == FTs.MOSTLY_Q4_K_S and i < 4:
                new = T.Q5_K
            self.i_attention_wv += 1
        elif "ffn_down" in name:
            i, n = self.i_ffn_down, self.n_layers
            if ft == FTs.MOSTLY_Q2_K:
                new = T.Q3_K
            elif ft == FTs.MOSTLY_Q3_K_M:
                new = T.Q5_K if i < n // 16 else T.Q4_K
            elif ft == FTs.MOSTLY_Q3_K_L:
                new = T.Q5_K
            elif ft == FTs.MOSTLY_Q4_K_M:
                if use_more_bits(i, n):
                    new = T.Q6_K
            elif ft in (FTs.MOSTLY_IQ4_NL, FTs.MOSTLY_IQ4_XS) and i < n // 8 and not self.has_imatrix:
                new = T.Q5_K
            elif ft == FTs.MOSTLY_Q5_K_M and use_more_bits(i, n):
                new = T.Q6_K
            elif ft == FTs.MOSTLY_Q4_K_S and i < n // 8:
                new = T.Q5_K
            elif ft in (FTs.MOSTLY_Q4_0, FTs.MOSTLY_Q5_0) and self.has_imatrix and i < n // 8:
                # llama.cpp guards the first ffn_down layers, with an importance matrix only
                new = T.Q4_1 if ft == FTs.MOSTLY_Q4_0 else T.Q5_1
            self.i_ffn_down += 1
        elif "attn_output.weight" in name:
            new = {FTs.MOSTLY_Q2_K: T.Q3_K, FTs.MOSTLY_Q3_K_M: T.Q4_K, FTs.MOSTLY_Q3_K_L: T.Q5_K}.get(ft, new)
        return new


# Within a block, tensors in the order the forward pass uses them, so q/k/v and gate/up lie side
# by side in the file and the engine can map each group as one matrix without a copy.
BLOCK_ORDER = (
    "attn_norm",
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_q_norm",
    "attn_k_norm",
    "attn_output",
    "ffn_norm",
    "ffn_gate",
    "ffn_up",
    "ffn_down",
)


def loader_order(names) -> list[str]:
    """Tensors outside blocks first (by name), then block by block in forward order; llama.cpp's
    loader finds tensors by name, and llama-quantize counts layers in this order too."""

    def key(name: str):
        if not name.startswith("blk."):
            return -1, 0, name
        _, layer, kind, *_ = name.split(".")
        rank = BLOCK_ORDER.index(kind) if kind in BLOCK_ORDER else len(BLOCK_ORDER)
        return int(layer), rank, name

    return sorted(names, key=key)
