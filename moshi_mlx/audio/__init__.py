"""Audio I/O: files, ring buffers and sound devices. No model code here."""
