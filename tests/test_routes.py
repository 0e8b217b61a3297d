"""GET /hyvideo/plan on a bare aiohttp app, through aiohttp's test client."""
from __future__ import annotations

import pytest
from aiohttp import web

from harness.pack import load_pack
from hyvideo_core.errors import InvalidInputError

pack = load_pack()
routes = pack.nodes.routes
host = pack.nodes.host.host


def latent_bytes_planner(calls):
    """A stand-in with the planner's signature: bytes of an fp32 latent, so values can be checked."""
    def estimate(settings, budget):
        calls.append((settings, budget))
        if settings.weight_format == "int3":
            raise InvalidInputError("weight_format: 'int3' is not a known format.")
        latent = settings.batch * 16 * ((settings.frames - 1) // 4 + 1) * (settings.height // 8) * (settings.width // 8) * 4
        return {"peak_bytes": latent * (2 if settings.true_cfg else 1), "breakdown": {"latents": latent}}
    return estimate


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
    ((settings, budget),) = calls
    assert settings.double_blocks_to_swap is None and settings.single_blocks_to_swap == 20
    assert settings.true_cfg is True and settings.weight_format == "fp8_e4m3fn" and budget == 24 * 1024**3


@pytest.mark.asyncio
async def test_plan_defaults_are_the_run_defaults_and_budget_is_the_device(aiohttp_client):
    from hyvideo_core.run.choices import DEFAULTS
    calls = []
    client = await client_for(aiohttp_client, latent_bytes_planner(calls))
    body = await (await client.get("/hyvideo/plan")).json()
    assert (calls[0][0].width, calls[0][0].height, calls[0][0].frames) == (DEFAULTS.width, DEFAULTS.height,
                                                                           DEFAULTS.frames)
    assert body["budget_bytes"] == body["device"]["total_bytes"]
    small = await (await client.get("/hyvideo/plan?budget_gb=0.001")).json()
    assert small["fits"] is False


@pytest.mark.asyncio
@pytest.mark.parametrize("query, named", [("width=abc", "width"), ("frames=0", "frames"),
                                          ("true_cfg=maybe", "true_cfg"), ("colour=red", "colour"),
                                          ("vae_tiling=big", "vae_tiling"),
                                          ("weight_format=int3", "int3")])
async def test_bad_parameters_answer_400_naming_them(aiohttp_client, query, named):
    client = await client_for(aiohttp_client, latent_bytes_planner([]))
    response = await client.get(f"/hyvideo/plan?{query}")
    assert response.status == 400
    assert named in (await response.json())["error"]


@pytest.mark.asyncio
async def test_the_engine_planner_answers_through_the_route(aiohttp_client):
    client = await client_for(aiohttp_client, None)

    async def get(query):
        response = await client.get(f"/hyvideo/plan?{query}")
        assert response.status == 200, await response.text()
        return await response.json()

    small = await get("width=960&height=544&frames=129&budget_gb=80")
    large = await get("width=1280&height=720&frames=129&budget_gb=80")
    assert 0 < small["peak_bytes"] < large["peak_bytes"]
    assert "DiT weights (resident)" in small["breakdown"] and small["swap"] == {"double": 0, "single": 0}
    fitted = await get("width=1280&height=720&frames=129&weight_format=fp8_e4m3fn&double_blocks_to_swap=auto"
                       "&single_blocks_to_swap=auto&budget_gb=24")
    assert fitted["fits"] is True and fitted["swap"]["double"] + fitted["swap"]["single"] > 0
    nothing = await get("double_blocks_to_swap=auto&single_blocks_to_swap=auto&budget_gb=4")
    assert nothing["fits"] is False and "nothing fits" in nothing["message"]
    snapped = await get("width=1000&frames=130")   # snapped as the sampler and the CLI snap, and said
    assert snapped["settings"]["width"] == 1008 and snapped["settings"]["frames"] == 129
    assert any("rounded up to 1008" in note for note in snapped["notes"])


def test_routes_mount_on_a_route_table_and_on_the_host():
    table = web.RouteTableDef()
    routes.add_routes(table, host)
    assert [(r.method, r.path) for r in table] == [("GET", "/hyvideo/plan")]
    assert ("GET", "/hyvideo/plan") in [(m, p) for m, p, _ in host.routes]  # registered at pack import


@pytest.mark.asyncio
async def test_repeated_questions_are_answered_from_the_cache(aiohttp_client):
    calls = []
    client = await client_for(aiohttp_client, latent_bytes_planner(calls))
    for width in ("960", "960", "1280", "960"):
        response = await client.get("/hyvideo/plan", params={"width": width, "budget_gb": "24"})
        assert response.status == 200
    assert [c[0].width for c in calls] == [960, 1280]
