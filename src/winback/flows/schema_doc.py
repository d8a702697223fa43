"""``docs/flows-schema.md``: the JSON schema of flow files, generated from the models.
``python -m winback.flows.schema_doc > docs/flows-schema.md``; a test checks it is current."""

from __future__ import annotations

import json

from winback.flows.models import FlowDefinition

HEADER = """# Flow file schema

Generated from `winback.flows.models` by `python -m winback.flows.schema_doc`; do not edit.
The syntax is explained in [flows.md](flows.md). Conditions (`if`, `goal`, schedule
audiences) use the segment condition language of [segments.md](segments.md).

```json
"""


def schema_markdown() -> str:
    schema = FlowDefinition.model_json_schema(by_alias=True)
    return HEADER + json.dumps(schema, indent=2, sort_keys=True) + "\n```\n"


if __name__ == "__main__":  # pragma: no cover
    print(schema_markdown(), end="")
