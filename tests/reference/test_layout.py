"""The include arrows the README states: client/ and server/ see only proto/ and common/, common/
sees only proto/, worker/ sees everything but server/ and client/. Read from the sources."""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)

# room -> the rooms its quoted includes may name ("gpt2d/" is the generated proto code).
ALLOWED = {
    "client": {"client", "common", "gpt2d"},
    "server": {"server", "common", "gpt2d"},
    "common": {"common", "gpt2d"},
    "worker": {"worker", "common", "gpt2d"},
}


def quoted_includes(room):
    for path in sorted((ROOT / room).rglob("*")):
        if path.suffix in (".h", ".cc"):
            for target in INCLUDE.findall(path.read_text(encoding="utf-8")):
                yield path.relative_to(ROOT), target


def test_every_room_includes_only_what_it_may():
    wrong = []
    seen = 0
    for room, allowed in ALLOWED.items():
        for path, target in quoted_includes(room):
            first = target.split("/", 1)[0]
            if "/" not in target:
                continue  # a file beside it
            seen += 1
            # Third-party headers in quotes (absl/, nlohmann/) are not rooms of ours.
            if first in ALLOWED and first not in allowed:
                wrong.append(f"{path}: {target}")
    assert seen > 200, f"only {seen} includes read: did the tree move?"
    assert not wrong, "includes against the arrows:\n" + "\n".join(wrong)


def test_no_room_is_missing():
    for room in ALLOWED:
        assert (ROOT / room).is_dir(), room
