"""Imports every built-in selector module so that its ``@register_selector`` runs."""

import tokensel.selectors.dart  # noqa: F401
import tokensel.selectors.divprune  # noqa: F401
import tokensel.selectors.fastv  # noqa: F401
import tokensel.selectors.mmtok  # noqa: F401
import tokensel.selectors.pool  # noqa: F401
import tokensel.selectors.pyramiddrop  # noqa: F401
import tokensel.selectors.simple  # noqa: F401
import tokensel.selectors.sparsevlm  # noqa: F401
import tokensel.selectors.topk_text  # noqa: F401
import tokensel.selectors.visionzip  # noqa: F401
