"""ftsweep: the best LoRA/QLoRA fine-tune of an open LLM for the least GPU time."""

__version__ = "0.1.0"
