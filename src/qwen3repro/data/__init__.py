"""Package data: the config schema and Qwen3's official chat template, byte for byte."""
