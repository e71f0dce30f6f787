"""Order approval: a manager approves an order before it is fulfilled."""

from __future__ import annotations

from pydantic import BaseModel, Field

from waystation import StepContext, create_step, create_workflow


class Order(BaseModel):
    order_id: str = Field(min_length=1)
    amount: float = Field(gt=0)


class ValidatedOrder(Order):
    requires_approval: bool


class ApprovalRequest(BaseModel):
    order_id: str
    amount: float
    reason: str


class Approval(BaseModel):
    approved: bool
    approver: str = Field(min_length=1)
    note: str = ""


class Decision(BaseModel):
    order_id: str
    approved: bool
    approver: str
    note: str = ""


class Fulfilment(BaseModel):
    order_id: str
    status: str
    approver: str


async def _validate(ctx: StepContext) -> ValidatedOrder:
    order: Order = ctx.input_data
    return ValidatedOrder(**order.model_dump(), requires_approval=order.amount >= 100)


async def _approval(ctx: StepContext) -> Decision:
    order: ValidatedOrder = ctx.input_data
    if ctx.resume_data is None:
        reason = "amount needs a manager" if order.requires_approval else "routine check"
        ctx.suspend(
            ApprovalRequest(order_id=order.order_id, amount=order.amount, reason=reason),
            resume_label="manager",
        )
    answer: Approval = ctx.resume_data
    return Decision(order_id=order.order_id, **answer.model_dump())


async def _fulfil(ctx: StepContext) -> Fulfilment:
    decision: Decision = ctx.input_data
    status = "fulfilled" if decision.approved else "rejected"
    return Fulfilment(order_id=decision.order_id, status=status, approver=decision.approver)


validate = create_step(
    id="validate",
    description="Checks the order and decides whether it needs a manager.",
    input_schema=Order,
    output_schema=ValidatedOrder,
    execute=_validate,
)

approval = create_step(
    id="approval",
    description="Waits for a manager's decision.",
    input_schema=ValidatedOrder,
    output_schema=Decision,
    suspend_schema=ApprovalRequest,
    resume_schema=Approval,
    execute=_approval,
)

fulfil = create_step(
    id="fulfil",
    description="Fulfils an approved order, or records the rejection.",
    input_schema=Decision,
    output_schema=Fulfilment,
    execute=_fulfil,
)

order_approval = (
    create_workflow(
        id="order-approval",
        description="validate -> approval (suspends for a manager) -> fulfil",
        input_schema=Order,
        output_schema=Fulfilment,
    )
    .then(validate)
    .then(approval)
    .then(fulfil)
    .commit()
)
