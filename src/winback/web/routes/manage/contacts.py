"""``/api/v1/contacts``: one contact's profile, creating or updating it, changing its consent,
erasing it, and its tags."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field, create_model

from winback.channels import CONSENT_CHANNELS
from winback.contact_edit import upsert_contact
from winback.web.auth import ManageDep, Principal, ReadDep
from winback.web.deps import WorkspaceDep
from winback.web.routes.manage.common import BEARER, core_errors, plain, responses

router = APIRouter(prefix="/api/v1", tags=["contacts"], dependencies=[BEARER])

ContactRef = Annotated[
    str,
    Path(
        min_length=1,
        max_length=320,
        description="The contact's shop `customer_id`, its email address, or `#` and its "
        "internal id (`%23123` in a URL).",
    ),
]
Channel = Literal[CONSENT_CHANNELS]  # type: ignore[valid-type]
Source = Annotated[
    str | None,
    Field(
        min_length=1,
        max_length=120,
        description="Recorded with the change; default `api:<key or user name>`.",
    ),
]


def _source(given: str | None, who: Principal) -> str:
    return given.strip() if given and given.strip() else f"api:{who.name}"


class ContactTag(BaseModel):
    tag: str
    added_at: datetime
    added_by: str | None


class TagEvent(BaseModel):
    tag: str
    action: str = Field(description="`added` or `removed`.")
    at: datetime
    source: str | None


class ContactSegment(BaseModel):
    segment: str
    entered_at: datetime


class ContactProfile(BaseModel):
    """Everything about a contact (as `winback contacts show --json`)."""

    contact_id: int
    customer_id: str
    attributes: dict[str, Any]
    custom_attributes: dict[str, Any]
    consent: dict[str, bool | None] = Field(description="Per channel; null: never stated.")
    tags: list[ContactTag]
    tag_history: list[TagEvent]
    segments: list[ContactSegment]
    messages: list[dict[str, Any]] = Field(description="The latest 50 messages, newest first.")
    flows: list[dict[str, Any]] = Field(description="The flows the contact is in now.")


#: The fields of a contact to write: those of a contacts file (checked the same way).
ContactIn: type[BaseModel] = create_model(  # type: ignore[call-overload]
    "ContactIn",
    __config__=ConfigDict(extra="forbid"),
    __doc__="Fields to set (absent or null: left as they are), checked as a contacts import "
    "checks its cells; `attributes` are merged into the custom attributes, `tags` added.",
    email=(str | None, None),
    phone=(str | None, Field(None, description="Made E.164 with the workspace's phone region.")),
    first_name=(str | None, None),
    last_name=(str | None, None),
    birthday=(date | None, None),
    timezone=(str | None, Field(None, description="An IANA name such as Europe/Rome.")),
    locale=(str | None, None),
    created_at=(datetime | None, None),
    **{f"{channel}_consent": (bool | None, None) for channel in CONSENT_CHANNELS},
    attributes=(dict[str, Any], Field(default_factory=dict)),
    tags=(
        list[Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[^,]*[^,\s][^,]*$")]],
        Field(default_factory=list, description="Tags to add (no commas)."),
    ),
)


class ContactWritten(BaseModel):
    """What writing the contact did, and the contact as it now is."""

    outcome: Literal["created", "updated", "unchanged"]
    consent_changes: int
    tags_added: int
    contact: ContactProfile


class ConsentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channel: Channel
    status: Literal["granted", "revoked"]
    source: Source = None


class ConsentOut(BaseModel):
    """The consent change asked for, whether it changed anything, and the consent now."""

    contact_id: int
    channel: str
    status: Literal["granted", "revoked"]
    source: str
    at: datetime
    changed: bool = Field(description="False when the consent already was so (nothing logged).")
    consent: dict[str, bool | None]


class Erasure(BaseModel):
    """What erasing did (as `winback contacts delete --json`)."""

    contact_id: int
    customer_id: str
    erased: bool = Field(description="False when the contact was erased already.")
    erased_at: datetime


class ContactTags(BaseModel):
    """The contact's tags and their history (as `winback tags list --contact --json`)."""

    tags: list[ContactTag]
    history: list[TagEvent]


class TagChangeOut(BaseModel):
    """As `winback tags add|remove --json`: contacts asked for and those that changed."""

    tag: str
    requested: int
    changed: int


@router.get("/contacts/{contact}", response_model=ContactProfile, responses=responses(404))
def get_contact(contact: ContactRef, workspace: WorkspaceDep, _who: ReadDep) -> Any:
    """A contact's attributes, consent, tags, segments, flows in progress and messages."""
    with core_errors():
        return plain(workspace.contacts.profile(contact))


@router.put(
    "/contacts/{contact}",
    response_model=ContactWritten,
    status_code=200,
    responses={
        201: {"model": ContactWritten, "description": "The contact was created."},
        **responses(409),
    },
)
def put_contact(
    contact: Annotated[
        str,
        Path(
            min_length=1,
            max_length=255,
            pattern=r"^[^#]",
            description="The contact's shop `customer_id` (not starting with `#`, which "
            "names internal ids).",
        ),
    ],
    body: ContactIn,
    response: Response,
    workspace: WorkspaceDep,
    who: ManageDep,
) -> Any:
    """Create the contact with this `customer_id` (201) or update it (200). An erased contact is
    not filled again (409)."""
    given: dict[str, Any] = body.model_dump(exclude={"attributes", "tags"})
    values = {
        k: v.isoformat() if isinstance(v, date) else v for k, v in given.items() if v is not None
    }
    with core_errors():
        done = upsert_contact(
            workspace.engine,
            workspace.settings,
            contact,
            values,
            attributes=body.attributes,  # type: ignore[attr-defined]
            tags=body.tags,  # type: ignore[attr-defined]
            now=workspace.clock.now(),
            source=f"api:{who.name}",
        )
        profile = workspace.contacts.profile(f"#{done.contact_id}")
    if done.outcome == "created":
        response.status_code = 201
    return {
        "outcome": done.outcome,
        "consent_changes": done.consent_changes,
        "tags_added": done.tags_added,
        "contact": plain(profile),
    }


@router.post(
    "/contacts/{contact}/consent", response_model=ConsentOut, responses=responses(404, 409)
)
def change_consent(
    contact: ContactRef, body: ConsentIn, workspace: WorkspaceDep, who: ManageDep
) -> Any:
    """Grant or revoke the contact's consent on one channel. A change is written to the
    consent log with its source; a consent already so changes nothing."""
    with core_errors():
        done = workspace.contacts.change_consent(
            contact, body.channel, body.status == "granted", source=_source(body.source, who)
        )
        consent = workspace.contacts.profile(f"#{done.contact_id}", messages=0)["consent"]
    return ConsentOut(
        contact_id=done.contact_id,
        channel=done.channel,
        status=body.status,
        source=done.source,
        at=done.at,
        changed=done.changed,
        consent=consent,
    )


@router.delete("/contacts/{contact}", response_model=Erasure, responses=responses(404))
def erase_contact(
    contact: ContactRef,
    workspace: WorkspaceDep,
    who: ManageDep,
    reason: Annotated[
        str | None, Query(max_length=500, description="Why (kept in the erasure audit trail).")
    ] = None,
) -> Any:
    """Erase the contact's personal data (the GDPR right to erasure, as `winback contacts
    delete`): contact data nulled, consent revoked, tags and flows ended, orders kept
    without personal data, a tombstone against re-imports. Cannot be undone; erasing an
    erased contact does nothing."""
    with core_errors():
        return plain(workspace.contacts.erase(contact, reason=reason, source=f"api:{who.name}"))


@router.get("/contacts/{contact}/tags", response_model=ContactTags, responses=responses(404))
def contact_tags(contact: ContactRef, workspace: WorkspaceDep, _who: ReadDep) -> Any:
    """The contact's tags (with when and by whom) and its whole tag history."""
    with core_errors():
        return plain(workspace.tags.of_contact(workspace.contacts.resolve(contact)))


TagName = Annotated[str, Path(min_length=1, max_length=128, pattern=r"\S", description="The tag.")]


@router.put("/contacts/{contact}/tags/{tag}", response_model=TagChangeOut, responses=responses(404))
def add_tag(
    contact: ContactRef, tag: TagName, workspace: WorkspaceDep, who: ManageDep
) -> TagChangeOut:
    """Tag the contact (with history; flows triggered by the tag pick it up). Adding a tag
    the contact has changes nothing (`changed`: 0)."""
    with core_errors():
        done = workspace.tags.add(tag, contact_refs=[contact], source=f"api:{who.name}")
    return TagChangeOut(tag=done.tag, requested=done.requested, changed=len(done.changed))


@router.delete(
    "/contacts/{contact}/tags/{tag}", response_model=TagChangeOut, responses=responses(404)
)
def remove_tag(
    contact: ContactRef, tag: TagName, workspace: WorkspaceDep, who: ManageDep
) -> TagChangeOut:
    """Remove the tag from the contact (with history)."""
    with core_errors():
        done = workspace.tags.remove(tag, contact_refs=[contact], source=f"api:{who.name}")
    return TagChangeOut(tag=done.tag, requested=done.requested, changed=len(done.changed))
