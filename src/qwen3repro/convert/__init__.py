"""Stage 2, convert: the GGUF format, read with every offset checked and written at every llama.cpp file type."""
