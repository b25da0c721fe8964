"""aot: a reproduction of 'Improving Diffusion-Based Generative Models via Approximated Optimal Transport'.

The package holds the science (networks, preconditioning, loss, noise pairing, samplers, metrics); the
Snakemake workflow at the repository root only calls ``python -m aot <stage>``.
"""

__version__ = "0.1.0"
