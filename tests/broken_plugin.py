"""A plugin module that fails at import time: starcli must report it, never crash."""

raise ImportError("this plugin needs a library that is not installed")
