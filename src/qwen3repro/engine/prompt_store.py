"""The prompt store: whole prompts prefilled once, their keys, values and logits copied into any lane after."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

PROMPT_STORE_BYTES = 256 * 2**20


class PromptStore:
    """Prompts prefilled from an empty cache: their keys and values per layer and the logits after
    them, by their tokens, the least recently used going first past `max_bytes`. Such a prefill
    depends on the prompt alone, so copying it into another lane's cache is bitwise what prefilling
    it there would compute (what serving engines call prefix caching, for whole prompts)."""

    def __init__(self, max_bytes: int = PROMPT_STORE_BYTES):
        self.max_bytes = max_bytes
        self.entries: OrderedDict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray]] = OrderedDict()

    def get(self, prompt: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        key = tuple(prompt)
        entry = self.entries.get(key)
        if entry is not None:
            self.entries.move_to_end(key)
        return entry

    def put(self, prompt: list[int], keys: np.ndarray, values: np.ndarray, logits: np.ndarray) -> None:
        self.entries[tuple(prompt)] = (keys.copy(), values.copy(), logits.copy())
        while self.entries and sum(a.nbytes for e in self.entries.values() for a in e) > self.max_bytes:
            self.entries.popitem(last=False)
