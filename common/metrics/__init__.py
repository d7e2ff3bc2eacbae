"""Evaluation metrics (torch and the standard library only), one module per kind: ``retrieval``,
``classification``, ``representation``, ``verification``. Import from the module, so that a run imports
only the metrics it computes."""
