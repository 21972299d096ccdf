"""The terminal app: Moshi frame by frame, duplex audio, live UI, recording, files."""
