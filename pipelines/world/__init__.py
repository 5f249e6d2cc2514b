"""The road world: procedural driving scenes with known truth (see ``layout`` for the files)."""
