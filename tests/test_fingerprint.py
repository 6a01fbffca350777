"""harness.fingerprint: a measurement is keyed by the series' changes, not by its prose or positions."""

from harness.fingerprint import changes, series_hash

PATCH = b"""From: a
Subject: [PATCH] x
Description: prose
---
diff --git a/f.py b/f.py
index e2cd231..5db054b 100644
--- a/f.py
+++ b/f.py
@@ -551,6 +551,7 @@ class C:
     a = 1
+    b = 2
"""


def test_positions_and_prose_do_not_change_the_hash_but_a_change_does(tmp_path):
    moved = PATCH.replace(b"index e2cd231..5db054b", b"index 1e2207d..efe683f").replace(b"-551,6 +551,7", b"-556,6 +556,7")
    reworded = moved.replace(b"Description: prose", b"Description: other prose")
    changed = PATCH.replace(b"+    b = 2", b"+    b = 3")
    assert changes(PATCH) == changes(moved) == changes(reworded) != changes(changed)
    assert b"class C:" in changes(PATCH) and changes(b"a header only\n") == b""
    hashes = []
    for i, text in enumerate((PATCH, moved, changed)):
        (tmp_path / str(i)).mkdir()
        (tmp_path / str(i) / "0001-x.patch").write_bytes(text)
        hashes.append(series_hash(tmp_path / str(i), ["0001-x.patch"]))
    assert hashes[0] == hashes[1] != hashes[2] and len(hashes[0]) == 12
