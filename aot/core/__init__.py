"""Plain-data I/O shared by every stage: artifact readers that name the file and the rule to rerun
(``artifacts``), atomic writers and checkpoints (``checkpoint``: ``state_dict`` + constructor arguments + resolved
config, read with ``weights_only=True``), sample files and PNG grids (``samples``), downloads checked by sha256
(``download``), the non-finite checks every loop shares (``numerics``), the model-name type (``names``) and the
defaults several layers need (``defaults``).

Imports nothing else of ``aot``: every other subpackage may import it.
"""
