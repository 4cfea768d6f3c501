"""First-party OpenVINO generator backend for starcli (``openvino``).

Declared through the ``starcli.backends`` entry-point group like any third-party plugin; needs
the ``openvino`` extra (``pip install 'starcli[openvino]'``).
"""
