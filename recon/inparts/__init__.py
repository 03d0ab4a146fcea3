"""The run in parts: a file larger than memory split by payment group onto disk,
matched a part at a time, its flagged rows kept on disk."""
