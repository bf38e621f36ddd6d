"""Reading logs.raw back: time-range scans, replays into curated or files, the archive format."""
