"""The Mutation root, put together from one class per concept. Each mutation is one session
and one transaction, so a failure changes nothing."""

from __future__ import annotations

import strawberry

from schema.accounts import AccountMutations
from schema.branches import BranchMutations
from schema.conversation_mutations import ConversationMutations
from schema.message_edits import MessageEditMutations
from schema.message_mutations import MessageMutations
from schema.streams import StreamMutations


@strawberry.type
class Mutation(
    AccountMutations,
    ConversationMutations,
    MessageMutations,
    MessageEditMutations,
    StreamMutations,
    BranchMutations,
):
    pass
