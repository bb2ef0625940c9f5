"""The bundled demo model: its synthetic corpus, word-level tokenizer and training recipe."""
