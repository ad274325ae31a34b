"""The normal-state prompts of One-to-Normal (the paper's Appendix A.1) and the DreamBooth prompts.

[c] is the tuned subject "normal <class>"; [o] is the instance prompt "a photo of normal <class>".
"""
from __future__ import annotations

from typing import Sequence

STATE_LEVEL = ("{o} without flaw", "{o} without defect", "{o} without damage")
PHYSICAL_SIZE = ("a photo of a small {c}", "a photo of the small {c}", "a photo of a large {c}",
                 "a photo of the large {c}")
PHYSICAL_ADJECTIVES = ("bright", "dark", "blurry", "bad", "good", "cropped", "close-up", "low resolution")
# The fast preset's subset: the three state-level prompts (the ones that name the normal state).
FAST_PROMPT_INDICES = (0, 1, 2)


def readable(class_name: str) -> str:
    """'metal_nut' -> 'metal nut' (empty -> 'object')."""
    name = " ".join(str(class_name).replace("_", " ").split())
    return name or "object"


def instance_prompt(class_name: str) -> str:
    """The DreamBooth instance prompt: 'a photo of normal <class>'."""
    return f"a photo of normal {readable(class_name)}"


def class_prompt(class_name: str) -> str:
    """The prior-preservation class prompt: 'a photo of <class>'."""
    return f"a photo of {readable(class_name)}"


def normal_prompts(class_name: str, which: str | Sequence[str] = "all") -> list[str]:
    """The normal-state prompts c_i, in a fixed order.

    which: "all" (23 prompts: 3 state-level, 4 size, 8 adjectives x a/the), "fast" (the 3 state-level), or
    an explicit list of templates with `{c}` (subject) / `{o}` (instance prompt) placeholders.

    >>> normal_prompts("metal_nut")[:2]
    ['a photo of normal metal nut without flaw', 'a photo of normal metal nut without defect']
    >>> len(normal_prompts("x")), normal_prompts("x", "fast")[-1]
    (23, 'a photo of normal x without damage')
    """
    c = f"normal {readable(class_name)}"
    o = instance_prompt(class_name)
    if isinstance(which, str) and which in ("all", "fast"):
        templates = list(STATE_LEVEL) + list(PHYSICAL_SIZE)
        for adj in PHYSICAL_ADJECTIVES:
            templates += [f"a {adj} photo of a {{c}}", f"a {adj} photo of the {{c}}"]
        if which == "fast":
            templates = [templates[i] for i in FAST_PROMPT_INDICES]
    elif isinstance(which, str):
        raise ValueError(f"prompts must be 'all', 'fast' or a list of templates, got {which!r}")
    else:
        templates = list(which)
        if not templates:
            raise ValueError("the prompt list is empty; give at least one template such as '{o}'")
    return [t.format(c=c, o=o) for t in templates]

