"""The flower classifier that runs inside the SageMaker image: serving, and training.
Modules are small and single-purpose; server.py and training.py are the entrypoints.
"""
