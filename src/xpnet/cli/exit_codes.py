"""Exit codes of the ``xpnet`` command."""

EXIT_OK = 0
EXIT_FAILED = 1  # a failure while working: disk full, out of memory, a regression gate
EXIT_USAGE = 2  # bad usage or input: refused before anything changed
EXIT_DIVERGED = 3  # a training run diverged (its result.json says so)
EXIT_INTERRUPTED = 130  # SIGINT / SIGTERM (128 + 2, the shell's convention)
