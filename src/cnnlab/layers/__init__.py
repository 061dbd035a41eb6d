"""Reusable building blocks shared by several model families (one idea per file)."""
