"""Bench: prefill and decode speed of numpy, llama.cpp and transformers, measured as llama-bench does."""
