"""The documents of a parquet file's text column, for `gpt2-worker prep` (worker/data/documents.cc).

    python parquet_text.py FILE COLUMN

Debian 12 packages no Apache Arrow C++, so prep reads parquet through PyPI's pyarrow, in this
process, and gets the documents on stdout as records:

    int64 little-endian n >= 0, then n bytes   one document (UTF-8), in row order
    int64 -1, then int64 m, then m bytes        an error naming the file (and column); the end

Row groups are read one at a time in batches, so memory stays bounded whatever the file's size.
Null cells are skipped (their count is in the final record's message on stderr). Exit status: 0
after the last document, 2 after an error record.
"""
import struct
import sys


def fail(out, message):
    data = message.encode("utf-8", "replace")
    out.write(struct.pack("<qq", -1, len(data)))
    out.write(data)
    out.flush()
    sys.exit(2)


def main():
    if len(sys.argv) != 3:
        sys.stderr.write(__doc__)
        sys.exit(2)
    path, column = sys.argv[1], sys.argv[2]
    out = sys.stdout.buffer
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as e:
        fail(out, f"{path}: reading parquet needs pyarrow in {sys.executable} ({e}); "
                  "scripts/setup.sh installs it, GPT2_PYTHON names another Python")
    try:
        f = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as e:
        fail(out, f"{path}: not a readable parquet file: {e}")
    names = f.schema_arrow.names
    if column not in names:
        fail(out, f"{path}: no column {column!r} (columns: {', '.join(names)}); choose one with --column")
    kind = f.schema_arrow.field(column).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        fail(out, f"{path}: column {column!r} holds {kind}, not text")
    nulls = 0
    try:
        for group in range(f.num_row_groups):
            for batch in f.iter_batches(batch_size=1024, row_groups=[group], columns=[column]):
                for value in batch.column(0).to_pylist():
                    if value is None:
                        nulls += 1
                        continue
                    data = value.encode("utf-8")
                    out.write(struct.pack("<q", len(data)))
                    out.write(data)
    except (OSError, UnicodeDecodeError, pa.ArrowException) as e:
        fail(out, f"{path}: column {column!r}: cannot be read: {e}")
    out.flush()
    if nulls:
        sys.stderr.write(f"gpt2-worker prep: {path}: skipped {nulls} null {column!r} cells\n")


if __name__ == "__main__":
    main()
