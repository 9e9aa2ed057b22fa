"""Pure business core: no I/O, no frameworks."""
