"""modelport: put trained models into products and run them reliably."""

__version__ = "0.1.0"

__all__ = ["__version__"]
