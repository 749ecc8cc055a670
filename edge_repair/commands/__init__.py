"""Command groups of the CLI, one module each, registered in `edge_repair.cli`."""
