"""Grading inside course platforms: the autograder bundle and its run.

``bundle`` writes the ``autograder.zip`` that ``sdverify autograder gradescope`` builds, and
``run`` is what that zip's ``run_autograder`` calls for one submission.  Gradescope's
``results.json`` is a report format of a grade, so it lives with the others
(:mod:`sdverify.grading.gradescope`): this integration sits on top of the batch, never under it.
"""
