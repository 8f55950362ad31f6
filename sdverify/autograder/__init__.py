"""Grading inside course platforms: Gradescope's ``results.json``, the autograder bundle, its run.

``gradescope`` converts a graded submission to Gradescope's format, ``bundle`` writes the
``autograder.zip`` that ``sdverify autograder gradescope`` builds, and ``run`` is what that
zip's ``run_autograder`` calls for one submission.
"""
