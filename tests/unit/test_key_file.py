"""Generated keys (the embedded default): every process that starts at once ends up with the same key."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

from orderhub.adapters.pii_crypto import _key_file


def test_eight_processes_generating_the_key_at_once_all_read_the_first_one(tmp_path: Path) -> None:
    got: list[str] = []
    threads = [threading.Thread(target=lambda n=n: got.append(_key_file(tmp_path / "pii.key", lambda: f"key-{n}"))) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(got)) == 1 and (tmp_path / "pii.key").read_text().strip() == got[0]
    assert [p.name for p in tmp_path.iterdir()] == ["pii.key"]  # no temporary file left behind
    assert stat.S_IMODE((tmp_path / "pii.key").stat().st_mode) == 0o600
    assert _key_file(tmp_path / "pii.key", lambda: "another") == got[0]
