"""emeterai: Indonesia's e-Meterai, the electronic stamp duty, that does not fall over."""

__version__ = "0.1.0"
