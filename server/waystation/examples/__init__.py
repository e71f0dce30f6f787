"""Example workflows, served by default: an order approval and a document review whose
nested workflow suspends twice. Every resume rule of DESIGN.md §4 can be shown with them.

    order-approval:   validate -> approval (suspends) -> fulfil
    document-review:  prepare -> review [legal-review (suspends) -> editor-signoff (suspends)]
                      -> publish
"""

from waystation.examples.document_review import document_review, review
from waystation.examples.order_approval import order_approval

__all__ = ["document_review", "order_approval", "review"]
