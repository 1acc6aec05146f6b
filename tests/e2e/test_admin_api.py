"""The admin JSON API against a running proxy with a seeded history: who may call it,
filters, cursor pagination, the report's alerts, and no secrets in any answer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser.ops_stack import (
    ADMIN_KEY,
    CLIENT_KEY,
    DAY_MS,
    HOOK_TOKEN,
    HOUR_MS,
    SECRET_PROMPT,
    SECRETS,
    OpsStack,
    ops_stack,
)

JSON_ROUTES = ("/admin/routes", "/admin/tickets", "/admin/batches", "/admin/report")
PAGE_ROUTES = (("GET", "/admin"), ("GET", "/admin/login"), ("POST", "/admin/login"),
               ("POST", "/admin/logout"))  # fmt: skip


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpsStack]:
    with ops_stack(tmp_path_factory.mktemp("ops")) as stack:
        yield stack


@pytest.fixture
def admin(ops: OpsStack) -> Iterator[httpx.Client]:
    with ops.http(ADMIN_KEY) as client:
        yield client


def _error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    error: dict[str, Any] = body["error"]
    return error


def walk(client: httpx.Client, path: str, **params: Any) -> tuple[list[Any], int]:
    """Every id of a listing, following ``next``; and how many pages it took."""
    ids: list[Any] = []
    response = client.get(path, params=params)
    pages = 1
    while True:
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["object"] == "list"
        assert len(body["data"]) <= int(params.get("limit", 50))
        ids += [row["id"] for row in body["data"]]
        if body["data"]:
            assert body["first_id"] == body["data"][0]["id"]
            assert body["last_id"] == body["data"][-1]["id"]
        if not body["has_more"]:
            assert body["next"] is None
            return ids, pages
        response = client.get(body["next"])
        pages += 1


# --- who may call ------------------------------------------------------------------------


@pytest.mark.parametrize("path", JSON_ROUTES)
def test_json_routes_refuse_missing_bad_and_non_admin_keys(ops: OpsStack, path: str) -> None:
    with ops.http(None) as anonymous, ops.http("sk-not-a-key") as bad, ops.http(CLIENT_KEY) as user:
        assert anonymous.get(path).status_code == 401
        assert _error(anonymous.get(path))["code"] == "invalid_api_key"
        assert bad.get(path).status_code == 401
        refused = user.get(path)
        assert refused.status_code == 403
        assert _error(refused)["code"] == "permission_denied"
    with ops.http(ADMIN_KEY) as admin:
        assert admin.get(path).status_code == 200


@pytest.mark.parametrize(("method", "path"), PAGE_ROUTES)
def test_page_routes_answer_api_clients_like_every_admin_route(
    ops: OpsStack, method: str, path: str
) -> None:
    """Without a browser's ``Accept: text/html``, the page routes speak the API's
    language: 401 / 403 envelopes."""
    with ops.http(None) as anonymous, ops.http("sk-not-a-key") as bad, ops.http(CLIENT_KEY) as user:
        for client in (anonymous, bad):
            response = client.request(method, path)
            assert response.status_code == 401, (method, path)
            _error(response)
        refused = user.request(method, path)
        assert refused.status_code == 403
        assert _error(refused)["code"] == "permission_denied"
    with ops.http(ADMIN_KEY) as admin:
        assert admin.request(method, path).status_code not in (401, 403)


# --- routes ------------------------------------------------------------------------------


def test_routes_list_newest_first_with_every_column(ops: OpsStack, admin: httpx.Client) -> None:
    body = admin.get("/admin/routes", params={"limit": 5}).json()
    stored = ops.fetch("SELECT * FROM routes ORDER BY id DESC LIMIT 5")
    assert [r["id"] for r in body["data"]] == [r["id"] for r in stored]
    first = body["data"][0]
    assert first["object"] == "route"
    assert isinstance(first["stream"], bool)
    for column in ("ts_ms", "key_name", "model", "provider", "lane", "reason", "status",
                   "cost_usd", "saved_usd", "latency_ms"):  # fmt: skip
        assert first[column] == stored[0][column]
    assert body["has_more"] is True
    assert body["next"] == f"/admin/routes?limit=5&after={stored[-1]['id']}"


@pytest.mark.parametrize(
    ("params", "where"),
    [
        ({"lane": "batch"}, "lane = 'batch'"),
        ({"model": "deepseek-flash"}, "model = 'deepseek-flash'"),
        ({"key": "team-b"}, "key_name = 'team-b'"),
        ({"provider": "openai", "lane": "flex"}, "provider = 'openai' AND lane = 'flex'"),
        ({"status": "429"}, "status = 429"),
        ({"status": "failed"}, "status >= 400 AND status != 499"),
        ({"status": "ok"}, "status < 400"),
        ({"lane": "no-such-lane"}, "0"),
    ],
)
def test_routes_filters(
    ops: OpsStack, admin: httpx.Client, params: dict[str, str], where: str
) -> None:
    ids, pages = walk(admin, "/admin/routes", limit=7, **params)
    expected = [r["id"] for r in ops.fetch(f"SELECT id FROM routes WHERE {where} ORDER BY id DESC")]
    assert ids == expected
    assert pages == max(1, -(-len(expected) // 7))


def test_routes_since(ops: OpsStack, admin: httpx.Client) -> None:
    start = ops.now_ms - DAY_MS
    expected = [
        r["id"]
        for r in ops.fetch("SELECT id FROM routes WHERE ts_ms >= ? ORDER BY id DESC", (start,))
    ]
    assert 0 < len(expected) < 120
    assert walk(admin, "/admin/routes", since="24h", limit=500)[0] == expected
    unix = str(start // 1000)
    assert walk(admin, "/admin/routes", since=unix, limit=500)[0] == expected
    assert len(walk(admin, "/admin/routes", since="0", limit=500)[0]) == 120
    assert len(walk(admin, "/admin/routes", since="", limit=500)[0]) == 120  # a form's "all"


def test_routes_pages_walk_back_with_before(admin: httpx.Client) -> None:
    every = walk(admin, "/admin/routes", limit=500)[0]
    middle = every[40]
    older = admin.get("/admin/routes", params={"after": middle, "limit": 10}).json()
    assert [r["id"] for r in older["data"]] == every[41:51]
    newer = admin.get("/admin/routes", params={"before": middle, "limit": 10}).json()
    assert [r["id"] for r in newer["data"]] == every[30:40]  # still newest first
    assert newer["has_more"] is True
    assert newer["next"].endswith(f"before={every[30]}")
    # Walking "before" to the newest row ends with has_more false.
    ids, _ = walk(admin, "/admin/routes", before=middle, limit=15)
    assert sorted(ids, reverse=True) == every[:40]
    top = admin.get("/admin/routes", params={"before": every[0]}).json()
    assert top["data"] == []
    assert top["has_more"] is False


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "501"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"after": "5", "before": "9"}, "before"),
        ({"after": "abc"}, "after"),
        ({"since": "yesterday"}, "since"),
        ({"since": "90d"}, "since"),
        ({"status": "999"}, "status"),
        ({"status": "broken"}, "status"),
        ({"model": "m" * 201}, "model"),
    ],
)
def test_routes_bad_parameters(admin: httpx.Client, params: dict[str, str], param: str) -> None:
    response = admin.get("/admin/routes", params=params)
    assert response.status_code == 400
    assert _error(response)["param"] == param


# --- tickets -----------------------------------------------------------------------------


def test_tickets_of_every_key_with_filters_and_pages(ops: OpsStack, admin: httpx.Client) -> None:
    stored = ops.fetch(
        "SELECT id, key_name, status, batch_id FROM tickets ORDER BY created_ms DESC, id DESC"
    )
    assert {t["key_name"] for t in stored} == {"team-a", "team-b"}
    ids, pages = walk(admin, "/admin/tickets", limit=4)
    assert ids == [t["id"] for t in stored]
    assert pages == -(-len(stored) // 4)
    for params, keep in (
        ({"key": "team-b"}, lambda t: t["key_name"] == "team-b"),
        ({"status": "queued"}, lambda t: t["status"] == "queued"),
        ({"status": "completed,failed"}, lambda t: t["status"] in ("completed", "failed")),
        ({"batch": "cb_stuck"}, lambda t: t["batch_id"] == "cb_stuck"),
    ):
        expected = [t["id"] for t in stored if keep(t)]
        assert expected
        assert walk(admin, "/admin/tickets", limit=3, **params)[0] == expected, params
    middle = stored[5]["id"]
    newer = admin.get("/admin/tickets", params={"before": middle, "limit": 2}).json()
    assert [t["id"] for t in newer["data"]] == [stored[3]["id"], stored[4]["id"]]


def test_tickets_show_no_bodies_results_or_callback_urls(admin: httpx.Client) -> None:
    everything = admin.get("/admin/tickets", params={"limit": 500})
    assert SECRET_PROMPT not in everything.text
    assert "chatcmpl-x" not in everything.text  # a completed ticket's result
    assert HOOK_TOKEN not in everything.text
    data = everything.json()["data"]
    hooked = [t for t in data if t["callback_host"] is not None]
    assert [t["callback_host"] for t in hooked] == ["hooks.test"]
    assert all("callback_url" not in t and "idempotency_key" not in t for t in data)
    failed = next(t for t in data if t["status"] == "failed")
    assert failed["error"]["code"] == "server_error"  # the error object, parsed


def test_tickets_bad_parameters(admin: httpx.Client) -> None:
    for params, param in (
        ({"status": "queued,lost"}, "status"),
        ({"after": "tkt_nope"}, "after"),
        ({"before": "tkt_nope"}, "before"),
    ):
        response = admin.get("/admin/tickets", params=params)
        assert response.status_code == 400
        assert _error(response)["param"] == param


# --- batches -----------------------------------------------------------------------------


def test_batches_show_status_counts_age_and_provider_ids(
    ops: OpsStack, admin: httpx.Client
) -> None:
    body = admin.get("/admin/batches").json()
    by_id = {b["id"]: b for b in body["data"]}
    assert list(by_id) == ["cb_done", "cb_stuck"]  # newest first
    done, stuck = by_id["cb_done"], by_id["cb_stuck"]
    assert done["status"] == "completed"
    assert (done["line_count"], done["completed_lines"], done["failed_lines"]) == (8, 4, 4)
    assert done["pending_lines"] == 0
    assert done["provider_batch_id"] == "batch_prov_done"
    assert done["input_file_id"] == "file-cb_done"
    assert done["running_s"] == 2 * 3600  # submitted 5 h ago, ended 3 h ago
    assert done["age_s"] == 5 * 3600
    assert stuck["status"] == "submitted"
    assert stuck["pending_lines"] == 5
    assert stuck["running_s"] == stuck["age_s"] == 8 * 3600
    assert admin.get("/admin/batches", params={"status": "submitted"}).json()["data"] == [stuck]
    both = admin.get("/admin/batches", params={"status": "completed,submitted", "limit": 1}).json()
    assert [b["id"] for b in both["data"]] == ["cb_done"]
    assert both["next"] is not None
    assert [b["id"] for b in admin.get(both["next"]).json()["data"]] == ["cb_stuck"]
    assert admin.get("/admin/batches", params={"provider": "deepseek"}).json()["data"] == []
    assert admin.get("/admin/batches", params={"status": "running"}).status_code == 400


# --- report and alerts -------------------------------------------------------------------


def test_report_is_the_cli_report_plus_alerts_and_queue(ops: OpsStack, admin: httpx.Client) -> None:
    body = admin.get("/admin/report", params={"by": "day", "since": "30d"}).json()
    assert body["object"] == "report"
    assert body["by"] == "day"
    assert body["until_ms"] == ops.now_ms
    assert body["since_ms"] == ops.now_ms - 30 * DAY_MS
    assert len(body["rows"]) == 11  # ten days of requests, the day of "now" included
    total = body["total"]
    ended = ops.fetch(
        "SELECT COUNT(*) AS n, TOTAL(saved_usd) AS saved FROM routes WHERE ts_ms >= ?",
        (body["since_ms"],),
    )[0]
    assert total["savings"] == pytest.approx(ended["saved"])
    assert total["requests"] == ended["n"] + total["pending"]
    # Savings realised against the best: read from the same rows (every request that
    # ended in the period with a known price and usage).
    priced = ops.fetch(
        "SELECT COUNT(*) AS n, TOTAL(cost_usd) AS cost, TOTAL(baseline_usd) AS baseline "
        "FROM routes WHERE ts_ms >= ? AND status != 202 AND cost_usd IS NOT NULL "
        "AND prompt_tokens IS NOT NULL",
        (body["since_ms"],),
    )[0]
    best = body["best"]
    assert best["requests"] == priced["n"] > 0
    assert best["cost_usd"] == pytest.approx(priced["cost"], abs=1e-6)
    assert best["baseline_usd"] == pytest.approx(priced["baseline"], abs=1e-6)
    assert best["best_usd"] <= best["cost_usd"]
    assert best["nominal_turnaround_s"] == {"openai": 7200.0}  # the seeded finished batch
    assert body["queue"]["tickets"] == {"queued": 3, "submitted": 5}
    assert body["queue"]["oldest_queued_age_s"] == 2 * 3600
    assert body["queue"]["active_batches"] == {"openai": 1}
    kinds = {a["kind"]: a for a in body["alerts"]}
    assert set(kinds) == {"batch_stuck", "batch_failure_rate", "queue_age", "webhook_failures"}
    assert kinds["batch_stuck"]["subject"] == "cb_stuck"
    assert kinds["batch_failure_rate"]["value"] == 0.5
    assert kinds["queue_age"]["subject"] == "batch/openai/gpt-4o-mini"
    assert kinds["webhook_failures"]["subject"] == "hooks.test"
    assert admin.get("/admin/report", params={"by": "colour"}).status_code == 400
    lanes = admin.get("/admin/report").json()  # defaults: 7 days by lane
    assert lanes["by"] == "lane"
    assert lanes["since_ms"] == ops.now_ms - 7 * DAY_MS


def test_alerts_follow_the_clock(tmp_path: Path) -> None:
    with ops_stack(tmp_path) as ops, ops.http(ADMIN_KEY) as admin:

        def alerts() -> dict[str, str]:
            body = admin.get("/admin/report").json()
            return {a["kind"]: a["severity"] for a in body["alerts"]}

        assert alerts() == {
            "batch_stuck": "warning",
            "batch_failure_rate": "warning",
            "queue_age": "warning",
            "webhook_failures": "warning",
        }
        # A day later the failed batch and the webhook attempts are out of the window;
        # the stuck batch is past the provider's 24 h window: critical.
        ops.clock.advance(24 * HOUR_MS / 1000)
        assert alerts() == {"batch_stuck": "critical", "queue_age": "warning"}


def test_thresholds_from_the_config_silence_alerts(tmp_path: Path) -> None:
    relaxed = {
        "batch": {"stuck_after": "12h", "alert_failure_rate": 0.5, "alert_queue_age": "3h"},
        "webhooks": {"alert_failures": 5},
    }
    with ops_stack(tmp_path, **relaxed) as ops, ops.http(ADMIN_KEY) as admin:
        assert admin.get("/admin/report").json()["alerts"] == []


# --- secrets -----------------------------------------------------------------------------


def test_no_secret_in_any_admin_answer(ops: OpsStack, admin: httpx.Client) -> None:
    answers = [
        admin.get(path, params={"limit": 500} if path != "/admin/report" else {"by": by})
        for path in JSON_ROUTES
        for by in ("key", "lane")
    ]
    answers.append(admin.get("/admin", headers={"accept": "text/html"}))
    for response in answers:
        assert response.status_code == 200
        for secret in SECRETS:
            assert secret not in response.text, (response.url, secret)
    report = admin.get("/admin/report", params={"by": "key"}).json()
    assert {row["group"] for row in report["rows"]} == {"team-a", "team-b", "ops"}
