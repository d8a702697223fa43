"""A contacts file mixing UTF-8 and cp1252 lines is read line by line: every name comes out
right, the lines read as cp1252 are reported, and a line valid in neither is rejected
naming both encodings. Never silent mojibake."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from winback.ingest.readers import open_reader
from winback.store.schema import contacts
from winback.workspace import Workspace

LINES = [
    b"customer_id,email,first_name,last_name\n",
    "c1,j1@example.com,Jürgen,Müller\n".encode(),  # 2 UTF-8
    "c2,j2@example.com,Jürgen,Müller\n".encode("cp1252"),  # 3 cp1252
    "c3,r@example.com,Renée,Zoë\n".encode("cp1252"),  # 4 cp1252
    "c4,z@example.com,Zoë,\u0141ukasz\n".encode(),  # 5 UTF-8 (not in cp1252 at all)
    "c5,m@example.com,\u20acuro,".encode("cp1252") + "Gr\u00fc\u00df\n".encode(),  # 6 mixed
    b"c6,x@example.com,Bad\x81byte,x\n",  # 7 0x81: neither UTF-8 nor cp1252
]


def _names(ws: Workspace) -> dict[str, tuple[str, str]]:
    with ws.engine.connect() as conn:
        rows = conn.execute(
            select(contacts.c.customer_id, contacts.c.first_name, contacts.c.last_name)
        )
        return {r.customer_id: (r.first_name, r.last_name) for r in rows}


def test_reader_decodes_each_line_in_its_encoding(tmp_path: Path) -> None:
    path = tmp_path / "contacts.csv"
    path.write_bytes(b"".join(LINES))
    reader = open_reader(path)
    try:
        values = {r.line: r.values for r in reader.records()}
    finally:
        reader.close()
    assert values[2][2:] == ["Jürgen", "Müller"]
    assert values[3][2:] == ["Jürgen", "Müller"]
    assert values[4][2:] == ["Renée", "Zoë"]
    assert values[5][2:] == ["Zoë", "Łukasz"]
    assert values[6][2:] == ["€uro", "Grüß"]
    assert reader.description == (
        "CSV, UTF-8 (3 lines not valid UTF-8 read as cp1252: 3, 4, 6), delimiter ','"
    )


@pytest.mark.slow
def test_import_of_a_mixed_file_stores_every_name_right(
    workspace: Workspace, tmp_path: Path
) -> None:
    path = tmp_path / "contacts.csv"
    path.write_bytes(b"".join(LINES))
    env = {**os.environ, "WINBACK_DATABASE_URL": workspace.settings.database_url or ""}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "winback.cli",
            "import",
            "contacts",
            str(path),
            "--json",
            "--workspace",
            str(workspace.path),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert "read as cp1252: 3, 4, 6" in report["file_format"]
    assert (report["imported"], report["rejected"]) == (5, 1)
    assert _names(workspace) == {
        "c1": ("Jürgen", "Müller"),
        "c2": ("Jürgen", "Müller"),
        "c3": ("Renée", "Zoë"),
        "c4": ("Zoë", "Łukasz"),
        "c5": ("€uro", "Grüß"),
    }
    rejects = Path(report["reject_file"]).read_text(encoding="utf-8")
    assert "7,first_name" in rejects and "neither UTF-8 nor cp1252" in rejects
    assert "Bad\\x81byte" in rejects
