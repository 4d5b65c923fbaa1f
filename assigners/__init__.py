"""Anchor assigners and the overlaps they use. Leaf package: imports torch only."""
from assigners.integrals import MaskIntegrals, integral_image

__all__ = ["MaskIntegrals", "integral_image"]
