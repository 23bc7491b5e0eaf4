"""Strong galaxy-galaxy lensing domain (issue 6)."""
