"""The terminal app: Moshi frame by frame, full-duplex audio, live UI, recording, file mode."""
