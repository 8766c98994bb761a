"""Synthesis engine: label maps to images (domain randomization and MR physics)."""
