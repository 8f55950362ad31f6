"""Grading Jupyter submissions of the SD1.5 lesson: run, extract, check, report.

``runner`` executes a notebook unmodified in its own offline kernel (``kernel``) and brings
named variables back through safetensors/JSON (``extraction``, ``kernel_program``), after
``shell_escapes`` and ``segmentation`` have prepared its cells; ``spec`` loads the exercise spec (data);
``exercises`` holds the checks a spec names; ``grading`` turns one submission into a
:class:`~sdverify.notebooks.grading.SubmissionGrade`; ``batch`` grades folders in
parallel and ``reports`` writes CSV, Gradescope JSON, JUnit XML and HTML.
"""
