"""Imports every built-in selector module so that its ``@register_selector`` runs."""

import tokensel.selectors.mmtok  # noqa: F401
