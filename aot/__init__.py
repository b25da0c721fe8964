"""aot: a reproduction of 'Improving Diffusion-Based Generative Models via Approximated Optimal Transport'.

The package holds the science in subpackages by concern, imported in one direction only (a test enforces it):

    core <- data <- models <- training <- sampling <- eval <- report <- config <- cli

(see docs/architecture.md). The Snakemake workflow at the repository root only calls ``python -m aot <stage>``.
"""

__version__ = "0.1.0"
