"""The NumPy reference engine: Qwen3 from a GGUF file, its tokenizer and chat template, sampling and generation."""
