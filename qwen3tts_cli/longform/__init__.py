"""Long-form work over the library API: batch lists, multi-speaker dialogues and their mixdown."""
