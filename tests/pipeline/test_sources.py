"""foveal ingest reads CSV/TSV and Parquet tables (with a column mapping) and folders of .txt/.md/.html/.pdf."""

from __future__ import annotations

import json
import os

from typer.testing import CliRunner

from foveal.cli import app

runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})


def tiny_pdf(text: str, title: str) -> bytes:
    """A one-page PDF showing ``text`` (Helvetica), with ``title`` in its info dictionary; offsets computed."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
               b"/Resources << /Font << /F1 5 0 R >> >> >>",
               b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
               f"<< /Title ({title}) >>".encode()]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for n, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % n + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info 6 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def docs_of(collection) -> dict:
    return {d.id: d for batch in collection.store.iter_documents() for d in batch}


def test_csv_with_a_column_mapping(home, engine, tmp_path):
    path = tmp_path / "items.csv"
    path.write_text("key,headline,body,when,topic,score\n"
                    "a1,Ocean tides,The moon pulls the sea.,2024-01-05,science,3\n"
                    'a2,Bread,"Yeast, sugar and time.",,cooking,\n'
                    "a3,Too,many,cells,here,1,2\n"
                    ",No id,text,,x,1\n", encoding="utf-8")
    result = runner.invoke(app, ["ingest", str(path), "--index", "t", "--id-column", "key", "--title-column",
                                 "headline", "--text-column", "body", "--timestamp-column", "when"])
    assert result.exit_code == 1, result.output  # two rows refused, each named by its line
    assert f"{path}:4" in result.output and "more cells" in result.output and f"{path}:5" in result.output
    docs = docs_of(engine.get("t"))
    assert set(docs) == {"a1", "a2"}
    assert docs["a1"].title == "Ocean tides" and docs["a1"].metadata == {"topic": "science", "score": "3"}
    assert docs["a1"].timestamp is not None and docs["a2"].timestamp is None
    assert docs["a2"].text == "Yeast, sugar and time." and docs["a2"].metadata == {"topic": "cooking"}
    bad = runner.invoke(app, ["ingest", str(path), "--index", "t2", "--text-column", "nope"])
    assert bad.exit_code == 2 and "no column 'nope'" in bad.output and "t2" not in engine.list_indexes()


def test_parquet_keeps_types(home, engine, tmp_path):
    import datetime as dt

    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"id": [1, 2], "text": ["Magma rises through the crust.", "A list comprehension."],
                      "published": [dt.datetime(2023, 3, 1), dt.datetime(2024, 4, 2)],
                      "stars": [4.5, 2.0], "ok": [True, False]})
    path = tmp_path / "rows.parquet"
    pq.write_table(table, path)
    result = runner.invoke(app, ["ingest", str(path), "--index", "p", "--timestamp-column", "published",
                                 "--metadata-columns", "stars,ok"])
    assert result.exit_code == 0, result.output
    assert '"accepted": 2' in result.output
    docs = docs_of(engine.get("p"))
    assert docs["1"].metadata == {"stars": 4.5, "ok": True}
    assert docs["2"].timestamp == dt.datetime(2024, 4, 2, tzinfo=dt.timezone.utc).timestamp()


def test_a_folder_of_files_path_as_id_mtime_as_timestamp(home, engine, tmp_path):
    folder = tmp_path / "notes"
    (folder / "sub").mkdir(parents=True)
    (folder / "plain.txt").write_text("Bees dance to show where food is.")
    (folder / "sub" / "guide.md").write_text("# Tram history\n\nTrams first ran in 1891.")
    (folder / "page.html").write_text("<html><head><title>Lantern</title><script>alert(1)</script></head>"
                                      "<body><p>The harbour lantern glows.</p><style>p{}</style></body></html>")
    (folder / "paper.pdf").write_bytes(tiny_pdf("Mercury is the smallest planet", "Planets"))
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 not really")
    (folder / "skip.bin").write_bytes(b"\x00\x01")
    (folder / ".hidden.txt").write_text("secret")
    os.utime(folder / "plain.txt", (1_700_000_000, 1_700_000_000))
    result = runner.invoke(app, ["ingest", str(folder), "--index", "f"])
    assert result.exit_code == 1, result.output  # the broken PDF is reported by its path; the rest is ingested
    assert f"{folder / 'broken.pdf'}" in result.output
    docs = docs_of(engine.get("f"))
    assert set(docs) == {"plain.txt", "sub/guide.md", "page.html", "paper.pdf"}
    assert docs["plain.txt"].timestamp == 1_700_000_000 and docs["plain.txt"].title == "plain"
    assert docs["sub/guide.md"].title == "Tram history"
    assert docs["page.html"].title == "Lantern" and "alert" not in docs["page.html"].text
    assert "harbour lantern" in docs["page.html"].text
    assert docs["paper.pdf"].title == "Planets" and "smallest planet" in docs["paper.pdf"].text
    assert docs["paper.pdf"].metadata == {"path": "paper.pdf", "format": "pdf"}
    assert json.loads(result.output.strip().splitlines()[-1])["accepted"] == 4
