"""Shared formats every package may import: the strict base of config sections and the triple file."""
