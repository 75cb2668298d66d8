"""pocketrank: marketplace recommendations that keep working on a phone with a poor connection.

`pocketrank` is the command (pocketrank/cli.py) and `pocketrank.Home` the Python API behind it
(docs/python-api.md). The version is defined here, once: setup.cfg reads it (`attr:`), the package
metadata and `pocketrank --version` follow.
"""

__version__ = "0.1.0"
