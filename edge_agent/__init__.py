"""edge-agent: video streams in, detections out.

The installed distribution puts its three packages under this one name (``edge_agent.agent``,
``edge_agent.pipelines``, ``edge_agent.models``) so that it never claims generic top-level names
such as ``models`` that other packages, or a ``models.py`` in the working directory, also use. In
the repository the three packages stay top-level folders (``agent/``, ``pipelines/``, ``models/``);
``[tool.setuptools] package-dir`` in pyproject.toml maps them to their names under this one.
"""
