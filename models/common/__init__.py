"""Layer 1, what every other part of ``models`` uses: the error hierarchy (``errors``), the model
settings read from the environment (``settings``) and secret redaction for messages (``redaction``).

May import: nothing else in ``edge_agent``.
"""
