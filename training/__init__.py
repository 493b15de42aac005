"""stilts.training: STILTs intermediate-task training of XLM-R-family encoders.

Nine English tasks in four formats (pair classification, extractive QA, multiple choice, token
tagging), read from their official files (:mod:`.readers`, :mod:`.tasks`), tokenized
(:mod:`.features`) and batched (:mod:`.batches`) for one head per task (:mod:`.heads`) on a shared
encoder (:mod:`.model`); single or multi-task training on ``transformers.Trainer``
(:mod:`.trainer`, :mod:`.sampling`), evaluation (:mod:`.evaluation`, :mod:`.metrics`), and export of
the encoder into the stilts contract (:mod:`.finalize`). torch is imported only by the modules that
need it.
"""
