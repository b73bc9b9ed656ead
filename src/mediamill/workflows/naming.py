"""``{field}`` templates: job metadata of source files and delivery destinations.

Only plain names (and ``{metadata.key}``) are replaced — never attribute or index access, so a
template from a user cannot reach anything but the values it is given.
"""

from __future__ import annotations

import re
from typing import Any

_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.]*)\}")


def render_template(template: str, fields: dict[str, Any], *, strict: bool = True) -> str:
    """Replace ``{field}`` (and ``{metadata.key}``) by its value; only plain names, never attribute access.

    An unknown name is an error with ``strict`` (so a typo fails loudly), else it is left as written.
    """

    def one(m: re.Match[str]) -> str:
        value: Any = fields
        for part in m.group(1).split("."):
            if not isinstance(value, dict) or part not in value:
                if strict:
                    raise KeyError(m.group(1))
                return m.group(0)
            value = value[part]
        return "" if value is None else str(value)

    return _FIELD.sub(one, template)
