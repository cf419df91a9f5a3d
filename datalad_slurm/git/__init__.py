"""Git plumbing: one runner and its error, the cat-file reader, trees edited in memory, the pack
format.

Imports nothing of ours but ``errors``.
"""
