"""The settings reference of docs/operations.md, generated from `contract.settings.Settings`: one row
per environment variable with its type, default and meaning (the field's docstring).

    python scripts/settings_reference.py           # print the table
    python scripts/settings_reference.py --write   # put it between the markers in docs/operations.md
"""

from __future__ import annotations

import sys
import typing
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fcl.contract import model_types  # noqa: E402 - after the path is set
from fcl.contract.settings import PER_MODEL_TYPE, Settings  # noqa: E402

DOC = ROOT / "docs" / "operations.md"
BEGIN, END = "<!-- settings-reference:begin -->", "<!-- settings-reference:end -->"


def _type(annotation: Any) -> str:
    args = typing.get_args(annotation)
    choices = [a for a in args if a is not type(None)]
    if typing.get_origin(annotation) is typing.Literal or (
        len(choices) == 1 and typing.get_origin(choices[0]) is typing.Literal
    ):  # one of a few words: name them
        values = typing.get_args(annotation if typing.get_origin(annotation) is typing.Literal else choices[0])
        return " or ".join(f"`{v}`" for v in values) + (" or None" if len(choices) < len(args) else "")
    text = str(annotation).replace("typing.", "").replace("pathlib.", "").replace("<class '", "").replace("'>", "")
    return text.replace("NoneType", "None").replace(" | ", " or ")


def _default(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, dict) and not value:
        return "`{}`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def rows() -> list[tuple[str, str, str, str]]:
    """(variable, type, default, meaning) of every variable the settings read, in field order."""
    out: list[tuple[str, str, str, str]] = []
    per_type = {field: prefix for prefix, field in PER_MODEL_TYPE.items()}
    for name, field in Settings.model_fields.items():
        meaning = " ".join((field.description or "").split())
        if name in per_type:
            for spec in model_types.specs():
                variable = f"FCL_{per_type[name]}_{spec.name.upper()}"
                default = Settings(_env_file=None).model_dump().get(name, {}).get(spec.name)
                if name == "thresholds":
                    default = spec.default_threshold
                kind = "float" if "float" in str(field.annotation) else "int"
                out.append((variable, kind, _default(default), meaning))
            continue
        variable = field.validation_alias if isinstance(field.validation_alias, str) else f"FCL_{name.upper()}"
        default = field.get_default(call_default_factory=True)
        out.append((variable, _type(field.annotation), _default(default), meaning))
    return out


def table() -> str:
    lines = ["| variable | type | default | meaning |", "|---|---|---|---|"]
    lines += [f"| `{v}` | {t} | {d} | {m} |" for v, t, d, m in rows()]
    return "\n".join(lines) + "\n"


def render(doc: str) -> str:
    """`doc` with the table between the markers replaced by the current one."""
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{table()}{END}{tail}"


def main(argv: list[str]) -> int:
    if argv[1:] == ["--write"]:
        DOC.write_text(render(DOC.read_text(encoding="utf-8")), encoding="utf-8")
        return 0
    sys.stdout.write(table())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
