"""The OCI runtime side of pysc (DESIGN §8).

``spec`` reads and validates a bundle's ``config.json`` (OCI runtime-spec
1.0/1.1) into records (``core/record.py``) and writes the starter config that
``pysc spec`` produces.
"""
