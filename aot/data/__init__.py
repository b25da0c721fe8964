"""Datasets in the project's on-disk format (``datasets``: uint8 images, labels and metadata in one ``.npz``):
scikit-learn's digits, the CIFAR-10 python archive (read as data, never unpickled as code; its batch layout in
``cifar10_layout``), a researcher's own images — EDM's dataset_tool layout or class subfolders, folder or zip
(``images``) — synthetic data for tests, per-class subsets.

May import :mod:`aot.core` only.
"""
