"""Values produced by untrusted code: described where they were made, read back with bounds.

One descriptor for both submission kinds: :mod:`.describer` runs inside the untrusted
process (a module's sandboxed child imports it; a notebook's kernel runs its text), and
:mod:`.value` is how the grader reads what came back.  Nothing is ever unpickled.
"""
