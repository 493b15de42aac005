"""Graphs: building a model directory's ONNX graphs and checking them.

``parity`` holds the gate every route and quantisation is held to (and the sentences it runs on);
``checkpoint`` loads a torch checkpoint; ``adapters`` merges a LoRA adapter into one; ``quantize``
builds the q4 graph; ``export`` writes the fp32, int8 and q4 graphs plus the manifest. Imports
the bottom layer and :mod:`stilts.runtimes` (to run what it built); torch only inside functions.
"""
