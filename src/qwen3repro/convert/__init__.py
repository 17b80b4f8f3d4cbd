"""Convert: a Hugging Face model to GGUF at every llama.cpp file type, and the importance matrix."""
