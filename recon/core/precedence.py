"""Each row's category: the first finding in precedence order (SPEC section 5), the others
as flags.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from recon.core import categories as cat
from recon.core.reasons import Finding, categorical_column, text_column


def categories_of(index: pd.Index, findings: dict[str, Finding]
                  ) -> tuple[pd.Series, pd.Series, pd.Series]:
    """Each row's category (the first finding in precedence order), its reason, and the
    other findings as flags."""
    names = cat.ROW_CATEGORIES[:-1]
    flagged = np.zeros(len(index), dtype=bool)
    for name in names:
        flagged[findings[name].positions] = True
    rank = np.cumsum(flagged) - 1  # a flagged row's place among the flagged ones
    hits = np.zeros((int(flagged.sum()), len(names)), dtype=bool)
    texts = np.full(hits.shape, "", dtype=object)
    for column, name in enumerate(names):
        at = rank[findings[name].positions]
        hits[at, column] = True
        texts[at, column] = findings[name].texts
    # Whole columns where each row has one value; a loop only over the rows with flags.
    first = hits.argmax(axis=1)  # the first finding in precedence order
    categories = np.array(names, dtype=object)[first].tolist()
    reasons = texts[np.arange(len(first)), first].tolist()
    extras = [""] * len(first)
    for at in np.flatnonzero(hits.sum(axis=1) > 1).tolist():
        extras[at] = "; ".join(f"{names[i]}: {texts[at, i]}"
                               for i in np.flatnonzero(hits[at])[1:].tolist())
    return (categorical_column(index, flagged, categories, other=cat.MATCHED),
            text_column(index, flagged, reasons), text_column(index, flagged, extras))
