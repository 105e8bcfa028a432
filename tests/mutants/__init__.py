"""`make mutants`: mutation testing of the core, storage and checker (cosmic-ray)."""
