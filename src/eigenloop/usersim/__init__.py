"""The in-process user simulator: one Conversation per episode over a UserPolicy, every turn checked.

from eigenloop.usersim import Conversation, make_policy

conv = Conversation(make_policy("procedural"), task)
turn = conv.open()
turn = conv.agent_message("...")
"""

from eigenloop.usersim.conversation import DEFAULT_MAX_TURNS, Conversation, ConversationError, resolve_domain
from eigenloop.usersim.policies import (
    POLICY_KINDS,
    ConversationView,
    LatencyUser,
    LLMUser,
    ProceduralUser,
    UserPolicy,
    UserPrompt,
    UserSimError,
    chat_messages,
    describe_turn,
    make_policy,
    system_prompt,
    tool_specs,
    turn_from_completion,
)
from eigenloop.usersim.validity import (
    OUT_OF_SCOPE_TOKEN,
    STOP_TOKEN,
    STOP_TOKENS,
    TRANSFER_TOKEN,
    check_turn,
    id_like_tokens,
)

__all__ = [
    "DEFAULT_MAX_TURNS",
    "OUT_OF_SCOPE_TOKEN",
    "POLICY_KINDS",
    "STOP_TOKEN",
    "STOP_TOKENS",
    "TRANSFER_TOKEN",
    "Conversation",
    "ConversationError",
    "ConversationView",
    "LLMUser",
    "LatencyUser",
    "ProceduralUser",
    "UserPolicy",
    "UserPrompt",
    "UserSimError",
    "chat_messages",
    "check_turn",
    "describe_turn",
    "id_like_tokens",
    "make_policy",
    "resolve_domain",
    "system_prompt",
    "tool_specs",
    "turn_from_completion",
]
