"""A local harness for the tests and the benchmarks, as Starlette ships its TestClient: the real
`serve` entrypoint started as SageMaker starts it (server.ServerProcess), synthetic model
directories in the checkpoint formats the server loads (checkpoints) and near-limit request
bodies (payloads). It needs `requests` (requirements-dev.txt); nothing else in the package
imports it (tests/test_layers.py checks that).
"""
