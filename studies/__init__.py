"""Research diagnostics beside the study files, one package per topic; run them from the repository root as
``python -m studies.<topic>.<name>``."""
