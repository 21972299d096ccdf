"""Building blocks shared by Mimi, the LM and the STT model. No I/O here."""
