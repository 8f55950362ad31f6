"""The one result model of a grade, for every submission kind, and its renderings.

A runner (``sdverify.checker`` for a ``.py``, ``sdverify.notebooks`` for an ``.ipynb``)
turns check results into a :class:`~sdverify.grading.model.SubmissionGrade` under the
points model (:mod:`.points`); every report reads that one object: text and JSON and JUnit
(:mod:`.render`), Gradescope (:mod:`.gradescope`), HTML and the class files
(``sdverify.notebooks.reports``).
"""
