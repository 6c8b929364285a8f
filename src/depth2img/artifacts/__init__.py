"""Files the project writes and reads back: atomic writes, weights-only loading, checksums,
checkpoint metadata."""
