"""Built-in model cards: one module per model, each defining ``CARD``.

Every module here (not starting with ``_``) is found by :mod:`dlqr.card` on
first use. Adding a model is adding a module; ``ORDER`` only fixes the order
in which the built-in ones are listed.
"""

ORDER = ("wine", "seizure", "digit")
