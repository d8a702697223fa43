"""What the management API's modules share: the documented error answers, the translation
of core errors into them, and core values made plain JSON values."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from fastapi import HTTPException, Security
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPBearer

from winback.contact_edit import ContactErased, ContactRefused
from winback.errors import NotFound, WinbackError
from winback.store.busy import StoreBusy
from winback.web.deps import ErrorPublic
from winback.web.errors import BUSY_RESPONSE

#: Where the operations' OpenAPI says how to authenticate (the dependencies of
#: :mod:`winback.web.auth` check it).
BEARER = Security(
    HTTPBearer(auto_error=False, description="An API key from `winback api-keys create`.")
)

_ERRORS: dict[int, str] = {
    400: "Refused by a rule of the workspace, or a segment or flow file is not valid "
    "(`detail` names the file and the place in it).",
    401: "Not signed in and no valid API key (`Authorization: Bearer <key>`).",
    403: "The API key lacks the scope this operation needs.",
    404: "No such segment, flow or contact (or the segment was never refreshed).",
    409: "The contact's personal data was erased: it cannot be changed again.",
}


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The documented error answers ``codes`` (plus 400, 401, 403 and the busy store's
    503)."""
    out: dict[int | str, dict[str, Any]] = {
        code: {"model": ErrorPublic, "description": _ERRORS[code]}
        for code in sorted({400, 401, 403, *codes})
    }
    out[503] = BUSY_RESPONSE
    return out


def invalid(where: str, name: str, message: str) -> RequestValidationError:
    """A 422 answer naming the parameter ``name`` in ``where`` (query, path, body)."""
    return RequestValidationError([{"type": "value_error", "loc": (where, name), "msg": message}])


@contextmanager
def core_errors() -> Iterator[None]:
    """Answer the core's refusals: unknown names 404, an erased contact 409, an invalid
    field 422, any other rule 400. A busy store propagates (503, :mod:`winback.web.errors`)."""
    try:
        yield
    except StoreBusy:
        raise
    except NotFound as exc:
        raise HTTPException(404, detail=str(exc)) from None
    except ContactErased as exc:
        raise HTTPException(409, detail=str(exc)) from None
    except ContactRefused as exc:
        raise invalid("body", exc.field, f"{exc.value!r}: {exc.reason}") from None
    except WinbackError as exc:
        raise HTTPException(400, detail=str(exc)) from None


def plain(value: Any) -> Any:
    """``value`` with decimals as floats, instants and days as ISO 8601 text and NumPy
    scalars as Python numbers: as the CLI's ``--json`` writes them."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(v) for v in value]
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    item = getattr(value, "item", None)
    if item is not None and type(value).__module__ == "numpy":
        return item()
    return value
