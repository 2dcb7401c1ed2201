"""Admin API for presets: ``/admin/presets`` (create, list) and ``/admin/presets/{slug}`` (show, change,
delete). A preset is used as ``"model": "@preset/<slug>"``; see ``proxy.presets``."""

from __future__ import annotations

from aiohttp import web

from proxy.admin_api import read_json_object
from proxy.auth import require_admin
from proxy.errors import ProxyError, json_response
from proxy.keys import PRESETS
from proxy.presets import Preset, PresetExistsError, PresetValidationError

__all__ = ["routes"]

routes = web.RouteTableDef()


def _invalid(exc: PresetValidationError) -> ProxyError:
    conflict = isinstance(exc, PresetExistsError)
    return ProxyError(409 if conflict else 400, str(exc), "preset_exists" if conflict else "invalid_parameter",
                      param=exc.param)


def _not_found(slug: str) -> ProxyError:
    return ProxyError(404, f"No preset named {slug!r}.", "preset_not_found", param="slug")


@routes.post("/admin/presets")
async def create_preset(request: web.Request) -> web.Response:
    await require_admin(request)
    data = await read_json_object(request)
    try:
        preset = await request.app[PRESETS].create(data)
    except PresetValidationError as exc:
        raise _invalid(exc) from None
    return json_response(preset.public(), status=201)


@routes.get("/admin/presets")
async def list_presets(request: web.Request) -> web.Response:
    await require_admin(request)
    presets = await request.app[PRESETS].list()
    return json_response({"items": [p.public() for p in presets], "total": len(presets)})


async def _get(request: web.Request) -> Preset:
    slug = request.match_info["slug"]
    preset = await request.app[PRESETS].get(slug)
    if preset is None:
        raise _not_found(slug)
    return preset


@routes.get("/admin/presets/{slug}")
async def show_preset(request: web.Request) -> web.Response:
    await require_admin(request)
    return json_response((await _get(request)).public())


@routes.patch("/admin/presets/{slug}")
async def update_preset(request: web.Request) -> web.Response:
    await require_admin(request)
    data = await read_json_object(request)
    slug = request.match_info["slug"]
    try:
        preset = await request.app[PRESETS].update(slug, data)
    except PresetValidationError as exc:
        raise _invalid(exc) from None
    if preset is None:
        raise _not_found(slug)
    return json_response(preset.public())


@routes.delete("/admin/presets/{slug}")
async def delete_preset(request: web.Request) -> web.Response:
    await require_admin(request)
    slug = request.match_info["slug"]
    if not await request.app[PRESETS].delete(slug):
        raise _not_found(slug)
    return json_response({"slug": slug, "deleted": True})
