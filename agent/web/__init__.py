"""The HTTP port's own pages: live view, pictures, readiness, metrics, and who may use them.

``agent.health`` runs the server; each module here adds one concern to its application.
"""
