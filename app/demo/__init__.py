"""The offline demo: synthetic nuclei and the project ``maskloop demo`` builds from them.

Only numpy, OpenCV and app.core: no torch and no Qt, so the demo and the generator load
without the model stack (tests/test_layers.py checks it).
"""
