"""Layer 2, what a model id is: parsing ``project/version``, ``family/variant``, ``builtin/...`` and
local directories into a ``ModelRef`` with its cache directory (``ids``), the public aliases
(``aliases``) and the foundation families an id may name (``families``).

May import: ``models.common``.
"""
