"""robdistill: how much adversarial robustness does a student inherit when it is distilled, on
clean inputs only, from an adversarially trained teacher -- and which logits carry it?"""

__version__ = "0.1.0"
