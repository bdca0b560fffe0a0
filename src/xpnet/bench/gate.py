"""The regression gate: same-run ratios compared with a committed baseline."""

from __future__ import annotations

from .checks import record_key
from .defaults import GATED_RATIOS, NOISY_RELATIVE_IQR


# -- regression gate -------------------------------------------------------------------------------
def check_against(result: dict, baseline: dict, tolerance: float = 0.2) -> list[str]:
    """Compare same-run ratios with a committed baseline; return one line per regression.

    A ratio regresses when it falls below ``baseline * (1 - tolerance)``.  Absolute times are
    never compared: shared CI machines are too noisy for them.  A line names the noisy
    implementations of either run, since a noisy point's ratio may have moved by noise alone.
    """
    base = {record_key(r): r for r in baseline["records"]}
    problems = []
    for r in result["records"]:
        b = base.get(record_key(r))
        if b is None:
            continue
        note = _noise_note(r, b)
        for ratio in GATED_RATIOS:
            if ratio in r and ratio in b and r[ratio] < b[ratio] * (1 - tolerance):
                problems.append(f"{r['device']} {r['sizes']} batch {r['batch_size']}: {ratio} {r[ratio]:.3f} < "
                                f"baseline {b[ratio]:.3f} - {tolerance:.0%}{note}")
    return problems


def gate(result: dict, baseline: dict, tolerance: float = 0.2) -> dict:
    """The regression gate's verdict: ``problems`` (regressions, plus a line when no point of the
    run matched the baseline -- a gate that compared nothing must not pass), ``compared`` (points)
    and ``noisy`` (one line per compared point that was noisy in this run or the baseline)."""
    base = {record_key(r): r for r in baseline["records"]}
    pairs = [(r, base[record_key(r)]) for r in result["records"] if record_key(r) in base]
    problems = check_against(result, baseline, tolerance)
    if not pairs:
        problems.append("no point of this run matched the baseline, so nothing was compared")
    noisy = [f"{r['device']} {r['sizes']} batch {r['batch_size']}:{_noise_note(r, b)}" for r, b in pairs
             if _noise_note(r, b)]
    return {"compared": len(pairs), "problems": problems, "noisy": noisy}


def _noise_note(run_rec: dict, base_rec: dict) -> str:
    parts = [f"{label} {', '.join(rec['noisy'])}" for label, rec in (("noisy in this run:", run_rec),
                                                                    ("noisy in baseline:", base_rec))
             if rec.get("noisy")]
    return f" [{'; '.join(parts)}; relative IQR > {NOISY_RELATIVE_IQR:.0%}]" if parts else ""
