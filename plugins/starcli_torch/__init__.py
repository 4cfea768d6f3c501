"""First-party PyTorch generator backends for starcli (``cpu``, ``cuda``).

Declared through the ``starcli.backends`` entry-point group like any third-party plugin.
"""
