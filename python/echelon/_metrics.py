"""Prometheus text exposition built from a router status dict."""

from __future__ import annotations

from typing import Any, Dict, List


def _esc(v: Any) -> str:
    return str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(status: Dict[str, Any]) -> str:
    lines: List[str] = []

    def metric(name: str, kind: str, help_: str, samples: List[tuple]) -> None:
        lines.append(f"# HELP {name} {help_}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            lab = ",".join(f'{k}="{_esc(v)}"' for k, v in labels.items())
            lines.append(f"{name}{{{lab}}} {value}")

    pools = status.get("pools", [])
    metric("echelon_pool_requests_total", "counter", "Calls routed through the pool.",
           [({"pool": p["name"]}, p["stats"]["total_requests"]) for p in pools])
    metric("echelon_pool_failures_total", "counter", "Calls through the pool that failed.",
           [({"pool": p["name"]}, p["stats"]["failed_requests"]) for p in pools])
    metric("echelon_pool_in_flight", "gauge", "Requests in flight on the pool's instances.",
           [({"pool": p["name"]}, p["in_flight"]) for p in pools])
    metric("echelon_pool_queue_length", "gauge", "Requests waiting for a slot.",
           [({"pool": p["name"]}, p["queue_length"]) for p in pools])
    insts: Dict[str, Dict[str, Any]] = {}
    for g in status.get("groups", []):
        for e in g["echelons"]:
            for i in e["instances"]:
                insts[i["instance_id"]] = i
    states = ["healthy", "degraded", "unhealthy", "failed", "recovering"]
    metric("echelon_instance_state", "gauge", "1 for the instance's current health state.",
           [({"instance": k, "state": s}, int(v["status"] == s)) for k, v in insts.items() for s in states])
    metric("echelon_instance_requests_total", "counter", "Attempts sent to the instance.",
           [({"instance": k}, v["stats"]["requests"]) for k, v in insts.items()])
    metric("echelon_instance_failures_total", "counter", "Attempts on the instance that failed.",
           [({"instance": k}, v["stats"]["failures"]) for k, v in insts.items()])
    metric("echelon_instance_in_flight", "gauge", "Requests in flight on the instance.",
           [({"instance": k}, v["in_flight"]) for k, v in insts.items()])
    metric("echelon_instance_breaker_open", "gauge", "1 when the instance's breaker is open.",
           [({"instance": k}, int(v["breaker"]["state"] == "OPEN")) for k, v in insts.items()])
    metric("echelon_instance_latency_ewma_seconds", "gauge", "EWMA of successful latency.",
           [({"instance": k}, v["stats"]["ewma_latency"]) for k, v in insts.items() if v["stats"]["ewma_latency"] is not None])
    return "\n".join(lines) + "\n"
