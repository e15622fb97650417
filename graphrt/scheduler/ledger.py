"""The transfer ledger: every host<->device and device<->device copy a run makes, with its bytes and
duration. ``summary()`` maps ``"HtoD"``, ``"DtoH"``, ``"DtoD"`` to
``{"invocations": n, "bytes": b, "seconds": s}``; parameter uploads at build time are counted
separately under ``uploads``. ``bytes_per_item("HtoD")`` is the bytes each batch item (an image)
cost on the bus in the streamed uploads (which count their items).
"""
from __future__ import annotations

import threading

KINDS = ("HtoD", "DtoH", "DtoD")


class Ledger:
    """Thread-safe copy counters (the copy stream and the caller both record)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.reset()
        self.uploads = {"invocations": 0, "bytes": 0, "seconds": 0.0}

    def reset(self) -> None:
        """Forget the per-step copies (parameter uploads are kept)."""
        with getattr(self, "_lock", threading.Lock()):
            self._rows = {k: {"invocations": 0, "bytes": 0, "seconds": 0.0} for k in KINDS}
            self._items = {k: [0, 0] for k in KINDS}  # items counted, bytes of the copies counting them

    def record(self, kind: str, nbytes: int, seconds: float, items: int = 0) -> None:
        with self._lock:
            if items:
                self._items[kind][0] += int(items)
                self._items[kind][1] += int(nbytes)
            row = self._rows[kind]
            row["invocations"] += 1
            row["bytes"] += int(nbytes)
            row["seconds"] += float(seconds)

    def record_upload(self, nbytes: int, seconds: float) -> None:
        with self._lock:
            self.uploads["invocations"] += 1
            self.uploads["bytes"] += int(nbytes)
            self.uploads["seconds"] += float(seconds)

    def bytes_per_item(self, kind: str = "HtoD") -> float:
        """Bytes per batch item of the copies that counted their items (0.0 when none did)."""
        with self._lock:
            items, nbytes = self._items[kind]
            return nbytes / items if items else 0.0

    def summary(self) -> dict[str, dict]:
        with self._lock:
            return {k: dict(v) for k, v in self._rows.items()}

    def table(self) -> str:
        """The seed's NVIDIA-profile layout: kind, invocations, total MB, avg throughput, duration."""
        rows = [f"{'copy':6s} {'invocations':>12s} {'total MB':>10s} {'avg GB/s':>10s} {'duration ms':>12s}"]
        for kind, r in self.summary().items():
            gbs = r["bytes"] / r["seconds"] / 1e9 if r["seconds"] > 0 else 0.0
            rows.append(f"{kind:6s} {r['invocations']:12d} {r['bytes'] / 1e6:10.3f} {gbs:10.2f} "
                        f"{r['seconds'] * 1e3:12.3f}")
        return "\n".join(rows)
