"""The ground every other layer stands on and imports: the user-facing error types (errors.py),
atomic file writes (atomic.py) and validated config loading (config.py). Nothing here imports
any other fpgaslim module."""
