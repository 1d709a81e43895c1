"""The TechFlow database simulator and its ground truth (read only by evaluation and tests)."""
