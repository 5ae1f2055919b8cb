"""Stage F's library (``evaluate.py`` is its script).

* :mod:`s2i.evaluation.run`: one evaluation folder → its context → the registered metrics
  (``s2i.metrics.EVALUATION_METRICS``) → ``metrics.json`` and ``report.html``.
* :mod:`s2i.evaluation.scoring`: the generated images of an evaluation folder, the test captions' voices,
  the report's sample choice.
* :mod:`s2i.evaluation.report`: the self-contained HTML report and its browser check.
* :mod:`s2i.evaluation.attribute_classifier`: the judge of generated shapes images (colour and shape),
  trained by ``prepare_attribute_classifier.py``.
"""
