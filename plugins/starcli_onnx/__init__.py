"""First-party ONNX Runtime generator backend for starcli (``onnx``).

Declared through the ``starcli.backends`` entry-point group like any third-party plugin; needs
the ``onnx`` extra (``pip install 'starcli[onnx]'``).
"""
