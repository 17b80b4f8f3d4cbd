"""Accuracy: the engine against transformers (the gate); perplexity and KL-divergence as llama.cpp has them."""
