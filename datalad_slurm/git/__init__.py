"""Git plumbing: one runner and its error, the pack format.

Imports nothing of ours but ``errors``.
"""
