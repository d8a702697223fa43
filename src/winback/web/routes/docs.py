"""The API's documentation: ``/openapi.json`` and ``/docs`` (Swagger UI served from the
package's ``static/vendor/swagger-ui``, nothing loaded from elsewhere), for a signed-in
user or an API key. ReDoc is not served."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from winback.web.auth import DashboardUserDep, Principal, signed_in

router = APIRouter(include_in_schema=False)

SWAGGER = "/static/vendor/swagger-ui"
FAVICON = "/static/favicon.svg"


@router.get("/openapi.json")
async def openapi(request: Request, _who: Annotated[Principal, Depends(signed_in)]) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get("/docs")
async def docs(request: Request, _who: DashboardUserDep) -> HTMLResponse:
    page = get_swagger_ui_html(
        openapi_url="/openapi.json",
        title=f"{request.app.title} API",
        swagger_js_url=f"{SWAGGER}/swagger-ui-bundle.js",
        swagger_css_url=f"{SWAGGER}/swagger-ui.css",
        swagger_favicon_url=FAVICON,
        # No validator badge: Swagger UI would load it from validator.swagger.io.
        swagger_ui_parameters={"validatorUrl": None},
    )
    page.headers["Cache-Control"] = "no-store"
    return page
