"""Code shared by the tests: the tiny task defined outside ``tasks/``, tiny model checkpoints, tiny configs.

Importable as ``helpers`` because pytest.ini puts ``tests/`` on ``sys.path``; fixtures built on these live
in ``tests/conftest.py``.
"""
