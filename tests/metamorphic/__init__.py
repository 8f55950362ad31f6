"""Metamorphic testing of the graders: semantics-preserving edits of submissions.

A grader must give a submission and any rewrite of it that computes the same values the
same grade: full marks to every rewrite of a correct submission, the same lost exercises
to every rewrite of a mistaken one.  :mod:`.source` edits Python source (a module or a
notebook cell), :mod:`.notebooks` edits notebooks, and :mod:`.strategies` draws the edits
with Hypothesis.  It lives in the test tree (``tests/`` is on ``sys.path`` under pytest), so
the wheel does not ship it and the suite imports it alike from a non-editable install.
"""
