"""Model: a Qwen3 Hugging Face directory from the Hub, a local path, random weights or training."""
