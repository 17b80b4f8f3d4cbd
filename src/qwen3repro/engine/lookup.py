"""Prompt-lookup drafting: guess the next tokens from an earlier place where the context said the same.

Text that quotes, edits or summarises its prompt repeats it. If the context's last n tokens occurred
before, the tokens that followed them then are a good guess for what follows now. The guess costs no
model at all; the generator checks it in one forward pass (generate.Generator._verify). This is
transformers' `prompt_lookup_num_tokens` and llama.cpp's lookup decoding: the latest earlier match
of the longest n-gram (max_ngram down to 1) wins.
"""

from __future__ import annotations

import numpy as np

MAX_NGRAM = 3


def propose(tokens: list[int], k: int, max_ngram: int = MAX_NGRAM) -> list[int]:
    """Up to k tokens that followed the latest earlier occurrence of the context's last n tokens,
    for the largest n <= max_ngram that has one; [] when nothing matches."""
    if k < 1 or len(tokens) < 2:
        return []
    context = np.asarray(tokens, dtype=np.int64)
    for n in range(min(max_ngram, len(context) - 1), 0, -1):
        pattern = context[-n:]
        # windows of n tokens that start early enough to be followed by at least one token
        windows = np.lib.stride_tricks.sliding_window_view(context[:-1], n)
        hits = np.flatnonzero((windows == pattern).all(axis=1))
        if len(hits):
            follow = hits[-1] + n  # the latest match: the freshest text is likeliest to be repeated
            return context[follow : follow + k].tolist()
    return []
