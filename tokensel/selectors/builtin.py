"""Imports every built-in selector module so that its ``@register_selector`` runs."""

import tokensel.selectors.dart
import tokensel.selectors.divprune
import tokensel.selectors.fastv
import tokensel.selectors.mmtok
import tokensel.selectors.pool
import tokensel.selectors.pyramiddrop
import tokensel.selectors.simple
import tokensel.selectors.sparsevlm
import tokensel.selectors.topk_text
import tokensel.selectors.visionzip  # noqa: F401 (each import binds `tokensel`; ruff flags the last)
