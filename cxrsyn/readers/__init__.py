"""Reader studies: make a static page for readers, score their answers (cxrsyn/readers/__main__.py)."""
