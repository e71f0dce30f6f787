"""Document review: a nested workflow asks legal, then an editor, before publishing."""

from __future__ import annotations

from pydantic import BaseModel, Field

from waystation import StepContext, create_step, create_workflow


class Document(BaseModel):
    document_id: str = Field(min_length=1)
    title: str
    body: str = ""


class Draft(BaseModel):
    document_id: str
    title: str
    words: int


class ReviewRequest(BaseModel):
    document_id: str
    title: str
    reviewer_role: str


class LegalDecision(BaseModel):
    approved: bool
    reviewer: str = Field(min_length=1)
    comments: str = ""


class EditorDecision(BaseModel):
    signed_off: bool
    editor: str = Field(min_length=1)


class Reviewed(BaseModel):
    document_id: str
    title: str
    legal_approved: bool
    legal_reviewer: str
    editor_signed_off: bool = False
    editor: str = ""


class Publication(BaseModel):
    document_id: str
    published: bool
    reviewers: list[str]


async def _prepare(ctx: StepContext) -> Draft:
    doc: Document = ctx.input_data
    await ctx.set_state({"prepared": doc.document_id})
    return Draft(document_id=doc.document_id, title=doc.title, words=len(doc.body.split()))


async def _legal_review(ctx: StepContext) -> Reviewed:
    draft: Draft = ctx.input_data
    if ctx.resume_data is None:
        ctx.suspend(
            ReviewRequest(document_id=draft.document_id, title=draft.title, reviewer_role="legal"),
            resume_label="legal",
        )
    decision: LegalDecision = ctx.resume_data
    return Reviewed(
        document_id=draft.document_id,
        title=draft.title,
        legal_approved=decision.approved,
        legal_reviewer=decision.reviewer,
    )


async def _editor_signoff(ctx: StepContext) -> Reviewed:
    reviewed: Reviewed = ctx.input_data
    if not reviewed.legal_approved:
        return reviewed
    if ctx.resume_data is None:
        ctx.suspend(
            ReviewRequest(
                document_id=reviewed.document_id, title=reviewed.title, reviewer_role="editor"
            ),
            resume_label="editor",
        )
    decision: EditorDecision = ctx.resume_data
    return reviewed.model_copy(
        update={"editor_signed_off": decision.signed_off, "editor": decision.editor}
    )


async def _publish(ctx: StepContext) -> Publication:
    reviewed: Reviewed = ctx.input_data
    published = reviewed.legal_approved and reviewed.editor_signed_off
    reviewers = [r for r in (reviewed.legal_reviewer, reviewed.editor) if r]
    return Publication(document_id=reviewed.document_id, published=published, reviewers=reviewers)


prepare = create_step(id="prepare", input_schema=Document, output_schema=Draft, execute=_prepare)

legal_review = create_step(
    id="legal-review",
    description="Waits for legal's decision.",
    input_schema=Draft,
    output_schema=Reviewed,
    suspend_schema=ReviewRequest,
    resume_schema=LegalDecision,
    execute=_legal_review,
)

editor_signoff = create_step(
    id="editor-signoff",
    description="Waits for an editor's sign-off (skipped when legal said no).",
    input_schema=Reviewed,
    output_schema=Reviewed,
    suspend_schema=ReviewRequest,
    resume_schema=EditorDecision,
    execute=_editor_signoff,
)

publish = create_step(
    id="publish", input_schema=Reviewed, output_schema=Publication, execute=_publish
)

review = (
    create_workflow(
        id="review",
        description="legal-review -> editor-signoff, each suspends",
        input_schema=Draft,
        output_schema=Reviewed,
    )
    .then(legal_review)
    .then(editor_signoff)
    .commit()
)

document_review = (
    create_workflow(
        id="document-review",
        description="prepare -> review (nested, suspends twice) -> publish",
        input_schema=Document,
        output_schema=Publication,
    )
    .then(prepare)
    .then(review)
    .then(publish)
    .commit()
)
