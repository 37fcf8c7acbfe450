"""Figures: loss terms, collapse diagnostics, brains (nilearn) and augmented views.

Every function returns a matplotlib Figure (it never calls ``plt.show()``), so
notebooks display it and scripts save it.
"""

from __future__ import annotations

# ---------------------------------------------------------------- loss & diagnostics

# ---------------------------------------------------------------- data (cohort, subjects)

# ---------------------------------------------------------------- augmented views
