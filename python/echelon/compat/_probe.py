"""Active health probe for compat instances: GET the provider's model-list endpoint (no
tokens spent). The engine runs its own probes only for pools it owns; compat pools select in
Python, so they probe here. API keys are resolved from the environment at probe time and
never logged or stored."""

from __future__ import annotations

import asyncio
import os
import re
import urllib.error
import urllib.request
from typing import Any, Dict, Mapping, Optional

__all__ = ["resolve_endpoint", "probe_endpoint"]

_DEFAULT_BASE = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
    "gemini": "https://generativelanguage.googleapis.com/v1beta",
}
_KIND_KEYS = ("type", "model_type", "provider_type")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::([^}]*))?\}")


def _kind(d: Mapping[str, Any]) -> Optional[str]:
    for k in _KIND_KEYS:
        if isinstance(d.get(k), str):
            v = d[k]
            return "openai" if v in ("openai_compatible", "openai-compatible", "siliconflow", "mock") else v
    return None


def resolve_endpoint(engine_cfg: Mapping[str, Any], model_ref: str) -> Optional[Dict[str, Any]]:
    """``{"kind", "base_url", "api_key"}`` (key still a ``${VAR}`` template) for a model
    reference, from an engine config dict; ``None`` when it cannot be resolved."""
    providers: Mapping[str, Any] = engine_cfg.get("providers") or {}
    layers = []
    flat = (engine_cfg.get("models") or {}).get(model_ref)
    if isinstance(flat, Mapping):
        p = providers.get(flat.get("provider") or _kind(flat) or "") or {}
        layers = [p.get("common") or p, flat]
    else:
        for pname, docs in providers.items():
            if not isinstance(docs, Mapping):
                continue
            common = docs.get("common") if isinstance(docs.get("common"), Mapping) else docs
            if model_ref in docs and isinstance(docs[model_ref], Mapping) and model_ref != "common":
                layers = [common, docs[model_ref]]
                break
            if ":" in model_ref and model_ref.split(":", 1)[0] == pname:
                layers = [common]
                break
            models = common.get("models") if isinstance(common, Mapping) else None
            if isinstance(models, list) and model_ref in models:
                layers = [common]
                break
    if not layers:
        return None
    merged: Dict[str, Any] = {}
    for layer in layers:
        merged.update({k: v for k, v in layer.items() if not isinstance(v, Mapping) or k == "headers"})
    kind = _kind(merged) or "openai"
    base = str(merged.get("base_url") or _DEFAULT_BASE.get(kind, "")).rstrip("/")
    if not base:
        return None
    return {"kind": kind, "base_url": base, "api_key": merged.get("api_key"), "headers": dict(merged.get("headers") or {})}


def _expand(value: Any) -> Optional[str]:
    if not isinstance(value, str):
        return None
    return _VAR.sub(lambda m: os.environ.get(m.group(1), m.group(2) or ""), value) or None


def _probe_sync(ep: Mapping[str, Any], timeout: float) -> bool:
    key = _expand(ep.get("api_key"))
    headers = {str(k): str(v) for k, v in (ep.get("headers") or {}).items()}
    kind = ep["kind"]
    url = ep["base_url"]
    if kind == "anthropic":
        url += "/v1/models"
        if key:
            headers["x-api-key"] = key
        headers.setdefault("anthropic-version", "2023-06-01")
    elif kind == "gemini":
        url += "/models"
        if key:
            headers["x-goog-api-key"] = key
    else:
        url += "/models"
        if key:
            headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url, headers=headers, method="GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 - URL comes from config
            return 200 <= r.status < 300
    except urllib.error.HTTPError as e:
        return e.code < 500 and e.code not in (401, 403, 429)
    except Exception:
        return False


async def probe_endpoint(ep: Mapping[str, Any], timeout: float = 5.0) -> bool:
    """True when the endpoint answers like a healthy provider (2xx, or a 4xx other than
    401/403/429, which means the server is up and the key works)."""
    return await asyncio.to_thread(_probe_sync, ep, timeout)
