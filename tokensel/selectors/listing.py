"""``tokensel selectors``: print the registry as a table."""

from __future__ import annotations

from tokensel.selectors.registry import list_selectors, selector_info


def main(argv: list[str] | None = None) -> int:
    names = list_selectors()
    width = max(len(n) for n in names)
    print(f"{'name':<{width}}  stage   description")
    for name in names:
        info = selector_info(name)
        print(f"{name:<{width}}  {info.stage:<6}  {info.description}")
    return 0
