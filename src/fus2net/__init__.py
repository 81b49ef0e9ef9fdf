"""fus2net: an experiment-tracked reproduction of Fus2Net for breast ultrasound classification."""

__version__ = "0.1.0"
