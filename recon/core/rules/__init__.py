"""The rules: one module per category, each a `CATEGORY` and its `finding` of the rows
(MISSING_IN_SETTLEMENT, of the records, gives `items`). A rule states its conditions
and reasons once, as one list (`recon.core.reasons.all_that_hold`).
"""

