"""First-party MTCNN face detector plugin for starcli (``mtcnn``).

Declared through the ``starcli.detectors`` entry-point group like any third-party plugin
(``mtcnn = "starcli_mtcnn.detector:MtcnnDetector"``). The P/R/O-nets are implemented here in
plain torch; their MIT-licensed weights are read from the files shipped inside the PyPI package
``facenet-pytorch`` (install it with ``pip install --no-deps facenet-pytorch``: it pins old torch
and numpy, and this plugin never imports it).
"""

from starcli_mtcnn.detector import MtcnnDetector

__all__ = ["MtcnnDetector"]
