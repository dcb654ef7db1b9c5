"""dinoeval: how good, and how healthy, is a self-supervised vision backbone?"""

from dinoeval.errors import DinoevalError

__version__ = "0.1.0"

__all__ = ["DinoevalError", "__version__"]
