"""Runtimes: how a graph runs on this machine.

``ortload`` and ``ovload`` import ONNX Runtime and OpenVINO with their telemetry off; ``routes``
names the CPU routes (runtime, graph, options) and wraps each runtime in a runner; ``batching``
groups texts of similar length into the batches a runner is fed. Imports only the bottom layer
(:mod:`stilts.errors`, :mod:`stilts.manifest`).
"""
