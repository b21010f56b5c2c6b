"""Pure decision core: values in, decision out. Nothing here performs I/O or reads a clock."""
