"""Files: atomic writes, named arrays and JSON without code execution, and feature files."""
