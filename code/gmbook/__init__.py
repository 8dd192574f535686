"""gmbook: companion package of the gmbook textbook on generative modeling."""
__version__ = "0.1.0"
