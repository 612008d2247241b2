"""Grid expansion, design hashes, cycle order and experiment ids (pure; no pytest)."""
