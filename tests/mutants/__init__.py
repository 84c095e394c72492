"""Safety mutants: break one safety rule on purpose, check that a fast test goes red.

`python -m tests.mutants` copies the repository to a scratch directory, applies
each mutant of `tests/mutants/catalog.py` there (one at a time, each in its own
fresh copy), runs the tests named for it and reports whether they caught it.
It exits non-zero when a mutant escaped, when a mutant could not be applied
(its search text is no longer found exactly once: the list must not rot) and
when the unmutated copy does not pass the same tests (then "caught" would mean
nothing). See `python -m tests.mutants --help`, `runner.py` for the mechanics
and `catalog.py` for the list.
"""
