"""Plain-text renderings shared by the commands."""

from __future__ import annotations

from typing import Any


def format_routes(rows: list[dict[str, Any]]) -> str:
    import datetime as dt

    header = (
        f"{'time (UTC)':<19}  {'key':<10} {'model':<18} {'lane':<15} {'status':>6} "
        f"{'ms':>7} {'in':>6} {'out':>5} {'cost $':>10} {'saved $':>9}  reason"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        when = dt.datetime.fromtimestamp(row["ts_ms"] / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        lines.append(
            f"{when:<19}  {(row['key_name'] or '-')[:10]:<10} {(row['model'] or '-')[:18]:<18} "
            f"{row['lane'][:15]:<15} {row['status']:>6} {_num(row['latency_ms'], 1):>7} "
            f"{_num(row['prompt_tokens']):>6} {_num(row['completion_tokens']):>5} "
            f"{_num(row['cost_usd'], 6):>10} {_num(row['saved_usd'], 6):>9}  {row['reason']}"
        )
    if not rows:
        lines.append("(no requests in this period)")
    return "\n".join(lines)


def _num(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if digits else str(value)
