"""The Ray fixtures (``fault_dir``, ``ray_local``) are in tests/conftest.py, shared with the evaluation."""
