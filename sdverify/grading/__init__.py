"""The one result model of a grade, for every submission kind, and its renderings.

A runner (``sdverify.checker`` for a ``.py``, ``sdverify.notebooks`` for an ``.ipynb``)
turns check results into a :class:`~sdverify.grading.model.SubmissionGrade` under the
points model (:mod:`.points`); every report reads that one object: text, JSON, JUnit and the
HTML page (:mod:`.render`), Gradescope (:mod:`.gradescope`); the class files that gather many
are the batch application's (``sdverify.notebooks.reports``).
"""
