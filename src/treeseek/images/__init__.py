"""Images: decoding and datasets."""
