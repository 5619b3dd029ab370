"""The field mapping editor: an account per expense category picked from the target's real
codes, a mapping file upload, and the YAML for engineers. Standalone and as the setup wizard's
mapping step. Warnings are shown before saving and need an explicit confirmation.

The routes only translate HTTP into calls of :mod:`integration_hub.services.mapping_editor`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.datastructures import FormData, UploadFile
from starlette.responses import RedirectResponse, Response

from integration_hub.mappings.spec import MAX_MAPPING_BYTES, MappingDocument
from integration_hub.mappings.validator import Problem
from integration_hub.services import configuration as config
from integration_hub.services import mapping_editor as editor
from integration_hub.services import setup, wizard
from integration_hub.services.errors import InvalidInput
from integration_hub.web.rendering import render, translator
from integration_hub.web.security import PageSession

router = APIRouter(include_in_schema=False)

STANDALONE = "/orgs/{org}/integrations/{type_key}/mapping"
WIZARD_STEP = "/orgs/{org}/integrations/{type_key}/setup/mapping"


@router.get(STANDALONE)
def show(request: Request, org: str, type_key: str, signed_in: PageSession) -> Response:
    return _show(request, org, type_key, signed_in, in_wizard=False)


@router.get(WIZARD_STEP)
def show_in_wizard(request: Request, org: str, type_key: str, signed_in: PageSession) -> Response:
    return _show(request, org, type_key, signed_in, in_wizard=True)


@router.post(STANDALONE)
async def submit(request: Request, org: str, type_key: str, signed_in: PageSession) -> Response:
    return await _submit(request, org, type_key, signed_in, in_wizard=False)


@router.post(WIZARD_STEP)
async def submit_in_wizard(
    request: Request, org: str, type_key: str, signed_in: PageSession
) -> Response:
    return await _submit(request, org, type_key, signed_in, in_wizard=True)


# -- handlers ----------------------------------------------------------------------------------
def _target(org: str, type_key: str, signed_in: Any, in_wizard: bool) -> editor.MappingTarget:
    target = editor.mapping_target(org, type_key, signed_in.actor)
    if in_wizard:
        wizard.check_step(type_key, "mapping")
    return target


def _show(
    request: Request, org: str, type_key: str, signed_in: Any, *, in_wizard: bool
) -> Response:
    target = _target(org, type_key, signed_in, in_wizard)
    if in_wizard and (elsewhere := _step_not_reached(org, type_key, signed_in)) is not None:
        return elsewhere
    _, document = config.current_mapping(target.integration)
    if in_wizard:  # a running integration's wizard shows its staged mapping (services/setup.py)
        document = setup.mapping_in_wizard(target.integration)
    saved = editor.saved_version(target.integration)
    flash = None
    requested = request.query_params.get("saved", "")
    if saved is not None and requested == str(saved.version):
        flash = ("Saved mapping version {version}", {"version": saved.version})
    elif saved is not None and request.query_params.get("unchanged") == str(saved.version):
        flash = (
            "Nothing changed: the mapping is still version {version}.",
            {"version": saved.version},
        )
    return _page(request, target, signed_in, document, in_wizard=in_wizard, flash=flash)


async def _submit(
    request: Request, org: str, type_key: str, signed_in: Any, *, in_wizard: bool
) -> Response:
    target = _target(org, type_key, signed_in, in_wizard)
    row, actor = target.integration, signed_in.actor
    actor.check_change(row.organisation_id)  # operators read only: refused before any parsing
    if in_wizard and (elsewhere := _step_not_reached(org, type_key, signed_in)) is not None:
        return elsewhere  # saving here must not let the wizard skip the steps before it
    form = await request.form()
    action = form.get("action")
    _, current = config.current_mapping(row)
    if in_wizard:
        current = setup.mapping_in_wizard(row)

    if action == "upload":
        try:
            document = editor.parse_upload(await _uploaded_bytes(form))
        except InvalidInput as exc:
            return _page(
                request,
                target,
                signed_in,
                current,
                in_wizard=in_wizard,
                upload_error=exc,
                status=422,
            )
        return _save(request, target, signed_in, document, form, in_wizard, uploaded=True)

    if action not in ("check", "save"):
        raise InvalidInput("choose check, save or upload")
    uploaded = isinstance(form.get("uploaded_document"), str) and bool(form["uploaded_document"])
    try:
        base = editor.parse_document(str(form["uploaded_document"])) if uploaded else current
        document = editor.apply_choices(
            base, editor.choices_from_form(form.multi_items()), target.adapter_type
        )
    except InvalidInput as exc:
        return _page(
            request, target, signed_in, current, in_wizard=in_wizard, input_error=exc, status=422
        )
    if action == "check":
        outcome = editor.check(row, document, actor)
        return _page(
            request,
            target,
            signed_in,
            document,
            in_wizard=in_wizard,
            outcome=outcome,
            checked=True,
            uploaded=uploaded,
        )
    return _save(request, target, signed_in, document, form, in_wizard, uploaded=uploaded)


def _save(
    request: Request,
    target: editor.MappingTarget,
    signed_in: Any,
    document: MappingDocument,
    form: FormData,
    in_wizard: bool,
    *,
    uploaded: bool,
) -> Response:
    row = target.integration
    # A running integration's wizard stages the mapping; it is saved when the change is applied.
    save = setup.stage_mapping if in_wizard and setup.stages_changes(row) else editor.save
    outcome = save(
        row,
        document,
        signed_in.actor,
        accept_warnings=form.get("accept_warnings") == "yes",
        shown_warnings=[w for w in form.getlist("shown_warning") if isinstance(w, str)],
    )
    if outcome.version is None:
        return _page(
            request,
            target,
            signed_in,
            document,
            in_wizard=in_wizard,
            outcome=outcome,
            uploaded=uploaded,
            status=422 if outcome.errors else 409,
        )
    base = f"/orgs/{target.organisation.slug}/integrations/{row.type_key}"
    if in_wizard:
        following = wizard.complete(row, "mapping", signed_in.actor)
        return RedirectResponse(f"{base}/setup/{following}", status_code=303)
    said = "unchanged" if outcome.unchanged else "saved"
    return RedirectResponse(f"{base}/mapping?{said}={outcome.version}", status_code=303)


async def _uploaded_bytes(form: FormData) -> bytes:
    upload = form.get("mapping_file")
    if not isinstance(upload, UploadFile) or not upload.filename:
        raise InvalidInput("no file was chosen", ["choose a mapping file (YAML or JSON) to upload"])
    return await upload.read(MAX_MAPPING_BYTES + 1)  # enough to know it is too large


# -- the page ----------------------------------------------------------------------------------
def _page(
    request: Request,
    target: editor.MappingTarget,
    signed_in: Any,
    document: MappingDocument,
    *,
    in_wizard: bool,
    outcome: editor.SaveOutcome | None = None,
    checked: bool = False,
    uploaded: bool = False,
    upload_error: InvalidInput | None = None,
    input_error: InvalidInput | None = None,
    flash: tuple[str, dict[str, Any]] | None = None,
    status: int = 200,
) -> Response:
    row, adapter_type = target.integration, target.adapter_type
    actor = signed_in.actor
    maps = editor.editable_maps(document, adapter_type)
    codes: list[Any] | None = None
    codes_error = ""
    if any(m.reference for m in maps):
        codes, codes_error = editor.live_codes(row, actor)
    errors = _described(outcome.errors if outcome else [], document)
    warnings = _described(outcome.warnings if outcome else [], document)
    row_problems: dict[str, list[str]] = {}
    for problem in errors + warnings:
        if problem["element_id"]:
            row_problems.setdefault(problem["element_id"], []).append(problem["message"])
    saved = editor.saved_version(row)
    base = f"/orgs/{target.organisation.slug}/integrations/{row.type_key}"
    context: dict[str, Any] = {
        "organisation": target.organisation.slug,
        "organisation_name": target.organisation.name,
        "type_key": row.type_key,
        "target_name": adapter_type.display_name,
        "reference_label": adapter_type.reference_label,
        "in_wizard": in_wizard,
        "action_url": f"{base}/setup/mapping" if in_wizard else f"{base}/mapping",
        "saved": saved,
        "may_edit": editor.may_change(row, actor),
        "maps": maps,
        "codes": codes,
        "postable": [c for c in codes or [] if c.postable],
        "known_codes": {c.code: c for c in codes or []},
        "codes_error": codes_error,
        "errors": errors,
        "warnings": warnings,
        "shown_warnings": [str(p) for p in outcome.warnings] if outcome else [],
        "confirm": bool(outcome and outcome.warnings and not outcome.errors and not checked),
        "checked": checked,
        "row_problems": row_problems,
        "uploaded_document": editor.as_json(document) if uploaded else "",
        "upload_error": upload_error,
        "input_error": input_error,
        "yaml": editor.as_yaml(document),
        "max_kib": MAX_MAPPING_BYTES // 1024,
        "flash": translator(request)(flash[0], **flash[1]) if flash else None,
        "maps_fields": True,
        "nav_current": "mapping",
        "steps": None,
    }
    if in_wizard:
        context.update(_wizard_frame(target, row))
    return render(request, "mapping.html", context, status)


def _described(problems: list[Problem], document: MappingDocument) -> list[dict[str, str]]:
    described = []
    for problem in problems:
        where = editor.problem_element(problem, document)
        described.append(
            {
                "message": problem.message,
                "label": where[0] if where else "",
                "element_id": where[1] if where else "",
            }
        )
    return described


def _wizard_frame(target: editor.MappingTarget, row: Any) -> dict[str, Any]:
    """The step list and "step n of m" of the setup wizard (the wizard screen's own helper)."""
    steps = wizard.steps_for(row.type_key)
    frame: dict[str, Any] = {"step_number": steps.index("mapping") + 1, "step_total": len(steps)}
    try:
        from integration_hub.web.pages.wizard import wizard_steps
    except ImportError:  # the wizard screen without its step list: the page still works
        return frame
    frame["steps"] = wizard_steps(target.organisation.slug, row.type_key, row, "mapping")
    return frame


def _step_not_reached(org: str, type_key: str, signed_in: Any) -> Response | None:
    """A redirect to where the wizard left off when the mapping step is not reached yet."""
    try:
        from integration_hub.web.pages.wizard import guarded
    except ImportError:
        return None
    found = guarded(org, type_key, "mapping", signed_in.actor)
    return found if isinstance(found, Response) else None
