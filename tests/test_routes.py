"""GET /hyvideo/plan on a bare aiohttp app, through aiohttp's test client."""
from __future__ import annotations

import dataclasses

import pytest
from aiohttp import web

from harness.pack import load_pack
from hyvideo_core.errors import InvalidInputError

pack = load_pack()
routes = pack.nodes.routes
host = pack.nodes.host.host


@dataclasses.dataclass
class CountedPlan:
    peak_bytes: int
    breakdown: dict


def latent_bytes_planner(calls):
    """A stand-in with the planner's signature: bytes of an fp32 latent, so values can be checked."""
    def estimate_from_settings(*, width, height, frames, batch, weight_format, attention, double_blocks_to_swap,
                               single_blocks_to_swap, true_cfg, vae_tiling, budget_bytes):
        calls.append(dict(locals()))
        if weight_format == "int3":
            raise InvalidInputError("weight_format: 'int3' is not a known format.")
        latent = batch * 16 * ((frames - 1) // 4 + 1) * (height // 8) * (width // 8) * 4
        return CountedPlan(peak_bytes=latent * (2 if true_cfg else 1), breakdown={"latents": latent})
    return estimate_from_settings


async def client_for(aiohttp_client, planner):
    app = web.Application()
    routes.add_routes(app, host, planner)
    return await aiohttp_client(app)


@pytest.mark.asyncio
async def test_plan_route_passes_parsed_settings_and_answers_json(aiohttp_client):
    calls = []
    client = await client_for(aiohttp_client, latent_bytes_planner(calls))
    response = await client.get("/hyvideo/plan", params={
        "width": "960", "height": "544", "frames": "129", "weight_format": "fp8_e4m3fn",
        "double_blocks_to_swap": "auto", "single_blocks_to_swap": "20", "true_cfg": "true", "budget_gb": "24"})
    assert response.status == 200, await response.text()
    body = await response.json()
    expected_latent = 16 * 33 * 68 * 120 * 4
    assert body["breakdown"] == {"latents": expected_latent}
    assert body["peak_bytes"] == 2 * expected_latent
    assert body["budget_bytes"] == 24 * 1024**3 and body["fits"] is True
    assert body["device"]["total_bytes"] > 0 and body["device"]["name"] == "cpu"
    assert body["settings"]["width"] == 960
    (call,) = calls
    assert call["double_blocks_to_swap"] is None and call["single_blocks_to_swap"] == 20
    assert call["true_cfg"] is True and call["weight_format"] == "fp8_e4m3fn"


@pytest.mark.asyncio
async def test_plan_defaults_are_the_official_settings_and_budget_is_the_device(aiohttp_client):
    calls = []
    client = await client_for(aiohttp_client, latent_bytes_planner(calls))
    body = await (await client.get("/hyvideo/plan")).json()
    assert (calls[0]["width"], calls[0]["height"], calls[0]["frames"]) == (1280, 720, 129)
    assert body["budget_bytes"] == body["device"]["total_bytes"]
    small = await (await client.get("/hyvideo/plan?budget_gb=0.001")).json()
    assert small["fits"] is False


@pytest.mark.asyncio
@pytest.mark.parametrize("query, named", [("width=abc", "width"), ("frames=0", "frames"),
                                          ("true_cfg=maybe", "true_cfg"), ("colour=red", "colour"),
                                          ("weight_format=int3", "int3")])
async def test_bad_parameters_answer_400_naming_them(aiohttp_client, query, named):
    client = await client_for(aiohttp_client, latent_bytes_planner([]))
    response = await client.get(f"/hyvideo/plan?{query}")
    assert response.status == 400
    assert named in (await response.json())["error"]


@pytest.mark.asyncio
async def test_missing_planner_answers_501(aiohttp_client, monkeypatch):
    monkeypatch.setattr(routes, "PLANNER_FUNCTION", ("hyvideo_core.runtime.no_such_planner", "estimate"))
    client = await client_for(aiohttp_client, None)
    response = await client.get("/hyvideo/plan")
    assert response.status == 501
    assert "planner not available" in (await response.json())["error"]


@pytest.mark.asyncio
async def test_real_planner_when_it_exists(aiohttp_client):
    try:
        routes.default_planner()
    except (ImportError, AttributeError):
        pytest.skip(f"{'.'.join(routes.PLANNER_FUNCTION)} has not landed yet")
    client = await client_for(aiohttp_client, None)
    small = await (await client.get("/hyvideo/plan?width=544&height=960&frames=129&budget_gb=80")).json()
    large = await (await client.get("/hyvideo/plan?width=720&height=1280&frames=129&budget_gb=80")).json()
    assert 0 < small["peak_bytes"] < large["peak_bytes"]


def test_routes_mount_on_a_route_table_and_on_the_host():
    table = web.RouteTableDef()
    routes.add_routes(table, host)
    assert [(r.method, r.path) for r in table] == [("GET", "/hyvideo/plan")]
    assert ("GET", "/hyvideo/plan") in [(m, p) for m, p, _ in host.routes]  # registered at pack import
