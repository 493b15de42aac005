"""Encoding: a tokenizer plus a chosen route.

``session`` loads one route of a model directory (runner + tokenizer, no choice); ``autoroute``
gates and times the routes as sessions and records the fastest on this CPU; ``encoder`` is
:class:`stilts.Encoder`: a name resolved under the home, the route chosen (``auto``) and loaded.
"""
