"""Review: the physician's side of the loop (DESIGN.md, step 8).

A radiologist opens a study, sees the AI marks, and answers: per finding agree, disagree
or unsure; per study normal or abnormal; a free-text conclusion; or a request for a
repeat scan. Answers are kept for ever (a change is a new record) and feed clinical
monitoring. The rules live here; :mod:`radsight.store.verdicts` keeps the rows.
"""
