"""Plain-data I/O shared by every stage: artifact readers that name the file and the rule to rerun
(``artifacts``), atomic writers and checkpoints (``checkpoint``: ``state_dict`` + constructor arguments + resolved
config, read with ``weights_only=True``), sample files and PNG grids (``samples``), downloads checked by sha256
(``download``) and the non-finite checks every loop shares (``numerics``).

Imports nothing else of ``aot``: every other subpackage may import it.
"""
